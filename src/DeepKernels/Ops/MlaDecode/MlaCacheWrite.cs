using DeepKernels.Backends;
using DeepKernels.Memory.KvCache;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MlaDecode;

/// <summary>
/// Writes new token latents into a <see cref="PagedLatentCache"/> at given slots
/// (slot = page * page_size + offset in page). BF16 caches store all 576 values rounded to
/// BF16 (nearest even). FP8 caches quantize c_kv (first 512 values) in 4 groups of 128 with
/// scale = max(amax, 1e-4) / 448 and E4M3 round-to-nearest-even saturating (as
/// <see cref="Quantize.ActivationQuantization"/>), and keep k_pe (last 64) as BF16.
/// </summary>
public static class MlaCacheWrite
{
    /// <summary>
    /// Writes <paramref name="latents"/> ([n, 576] Float32 or BFloat16 on the cache's backend)
    /// at <paramref name="slots"/> (n host int32 values, each in [0, num_pages * page_size)).
    /// </summary>
    public static void Write(Backend backend, PagedLatentCache cache, TensorView latents, ReadOnlySpan<int> slots)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(cache);
        if (!ReferenceEquals(cache.Backend, backend))
            throw new ArgumentException($"Expected a cache on backend '{backend.Name}', got one on '{cache.Backend.Name}'.", nameof(cache));
        ValidateLatents(backend, latents, slots.Length, nameof(latents));
        long capacity = (long)cache.NumPages * cache.PageSize;
        for (int i = 0; i < slots.Length; i++)
        {
            if ((uint)slots[i] >= capacity)
                throw new ArgumentOutOfRangeException(nameof(slots), slots[i], $"Expected slots[{i}] in [0, {capacity}) (num_pages * page_size), got {slots[i]}.");
        }
        if (slots.Length == 0) return;
        var impl = Guard.Implementation<IMlaCacheWriteBackend>(backend, "MLA latent cache write");
        impl.WriteLatents(new MlaCacheWriteArgs(latents, slots.ToArray(), cache.Storage, cache.Layout, cache.PageSize));
    }

    internal static void ValidateLatents(Backend backend, TensorView latents, long n, string name)
    {
        Guard.DType(latents, DType.Float32, DType.BFloat16, name);
        Guard.Shape(latents, name, n, LatentCacheFormat.HeadDim);
        Guard.Contiguous(latents, name);
        Guard.OnBackend(latents, backend, name);
    }
}

/// <summary>Validated arguments of <see cref="MlaCacheWrite"/>.</summary>
internal readonly record struct MlaCacheWriteArgs(TensorView Latents, int[] Slots, TensorView Storage, LatentCacheLayout Layout, int PageSize);

/// <summary>A backend's implementation of the latent cache write.</summary>
internal interface IMlaCacheWriteBackend
{
    void WriteLatents(in MlaCacheWriteArgs args);
}
