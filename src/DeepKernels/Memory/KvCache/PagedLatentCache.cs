using DeepKernels.Backends;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Memory.KvCache;

/// <summary>
/// One layer's paged MLA latent cache: a backend tensor of <see cref="NumPages"/> pages of
/// <see cref="PageSize"/> tokens (layout in <see cref="LatentCacheFormat"/>) plus, optionally,
/// the <see cref="KvPageAllocator"/> that owns its pages. Several layers can share one allocator
/// (same block tables for every layer) by passing it to each cache.
/// </summary>
public sealed class PagedLatentCache : IDisposable
{
    private readonly TensorBuffer _storage;

    /// <summary>
    /// Allocates the pages on <paramref name="backend"/>. With <paramref name="allocator"/> null a
    /// new allocator is created; a given one must match the page count and size.
    /// </summary>
    public PagedLatentCache(Backend backend, int numPages, int pageSize = LatentCacheFormat.DefaultPageSize,
        LatentCacheLayout layout = LatentCacheLayout.BFloat16, KvPageAllocator? allocator = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Positive(numPages, nameof(numPages));
        LatentCacheFormat.ValidatePageSize(pageSize, nameof(pageSize));
        if (layout is not (LatentCacheLayout.BFloat16 or LatentCacheLayout.Fp8))
            throw new ArgumentOutOfRangeException(nameof(layout), layout, "Unknown latent cache layout.");
        if (allocator is not null && (allocator.TotalPages != numPages || allocator.PageSize != pageSize))
            throw new ArgumentException($"Expected an allocator of {numPages} pages of {pageSize} tokens, got {allocator.TotalPages} of {allocator.PageSize}.", nameof(allocator));
        Backend = backend;
        NumPages = numPages;
        PageSize = pageSize;
        Layout = layout;
        Allocator = allocator ?? new KvPageAllocator(numPages, pageSize);
        _storage = layout == LatentCacheLayout.BFloat16
            ? backend.Allocate(DType.BFloat16, numPages, pageSize, LatentCacheFormat.HeadDim)
            : backend.Allocate(DType.UInt8, numPages, pageSize, LatentCacheFormat.Fp8BytesPerToken);
    }

    /// <summary>The backend holding the pages.</summary>
    public Backend Backend { get; }

    /// <summary>Pages in the cache.</summary>
    public int NumPages { get; }

    /// <summary>Tokens per page (a power of two in [16, 256]).</summary>
    public int PageSize { get; }

    /// <summary>BF16 or FP8 token records.</summary>
    public LatentCacheLayout Layout { get; }

    /// <summary>Bytes per token record (1152 or 656).</summary>
    public int BytesPerToken => LatentCacheFormat.BytesPerToken(Layout);

    /// <summary>The page allocator and block tables.</summary>
    public KvPageAllocator Allocator { get; }

    /// <summary>
    /// The pages: BFloat16 [num_pages, page_size, 576] or UInt8 [num_pages, page_size, 656].
    /// Fresh pages are uninitialised; readers only look at positions below a sequence's length.
    /// </summary>
    public TensorView Storage
    {
        get
        {
            ObjectDisposedException.ThrowIf(_storage.IsDisposed, this);
            return _storage.View;
        }
    }

    /// <summary>
    /// Appends <paramref name="latents"/> ([n, 576] Float32 or BFloat16, in this backend's memory:
    /// c_kv then the already rotated k_pe) to <paramref name="sequence"/>, allocating pages as
    /// needed, and returns the position of the first new token.
    /// </summary>
    public int Append(int sequence, TensorView latents)
    {
        Guard.Rank(latents, 2, nameof(latents));
        long n = latents.Dim(0);
        if (n > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(latents), n, "Too many tokens in one append.");
        // Validate the input before reserving positions so a bad tensor leaves the sequence unchanged.
        MlaCacheWrite.ValidateLatents(Backend, latents, n, nameof(latents));
        int start = Allocator.Append(sequence, (int)n);
        var slots = new int[n];
        Allocator.GetSlots(sequence, start, slots);
        MlaCacheWrite.Write(Backend, this, latents, slots);
        return start;
    }

    /// <summary>Host convenience for <see cref="Append(int, TensorView)"/> with float latents [n * 576].</summary>
    public unsafe int Append(int sequence, ReadOnlySpan<float> latents)
    {
        if (latents.Length % LatentCacheFormat.HeadDim != 0)
            throw new ArgumentException($"Expected a multiple of {LatentCacheFormat.HeadDim} values, got {latents.Length}.", nameof(latents));
        long n = latents.Length / LatentCacheFormat.HeadDim;
        if (Backend.MemoryLocation == MemoryLocation.Host)
        {
            fixed (float* p = latents)
                return Append(sequence, new TensorView((nint)p, DType.Float32, MemoryLocation.Host, n, LatentCacheFormat.HeadDim));
        }
        using var buffer = Backend.Upload(latents, DType.Float32, n, LatentCacheFormat.HeadDim);
        return Append(sequence, buffer.View);
    }

    /// <summary>
    /// Forks <paramref name="sequence"/> (see <see cref="KvPageAllocator.Fork"/>) and copies the
    /// parent's partially filled last page into the child's private page. Call after the
    /// parent's pending cache writes have completed.
    /// </summary>
    public int Fork(int sequence)
    {
        var fork = Allocator.Fork(sequence);
        if (fork.NeedsCopy) CopyPage(fork.SourcePage, fork.CopyPage);
        return fork.Sequence;
    }

    /// <summary>Copies all bytes of page <paramref name="source"/> into page <paramref name="destination"/>.</summary>
    public void CopyPage(int source, int destination)
    {
        if ((uint)source >= (uint)NumPages) throw new ArgumentOutOfRangeException(nameof(source), source, $"Expected a page in [0, {NumPages}).");
        if ((uint)destination >= (uint)NumPages) throw new ArgumentOutOfRangeException(nameof(destination), destination, $"Expected a page in [0, {NumPages}).");
        var storage = Storage;
        var src = storage.SliceRows(source, 1);
        var dst = storage.SliceRows(destination, 1);
        var bytes = new byte[src.ByteCount];
        Backend.CopyToHost(src, bytes);
        Backend.CopyFromHost(bytes, dst);
    }

    /// <summary>
    /// Reads back the <paramref name="sequence"/>'s latents as floats [length * 576] (dequantized
    /// for FP8), copying page by page from the backend. For tests and debugging, not hot paths.
    /// </summary>
    public float[] ReadLatents(int sequence)
    {
        int length = Allocator.Length(sequence);
        int[] pages = Allocator.Pages(sequence);
        var result = new float[(long)length * LatentCacheFormat.HeadDim];
        var pageBytes = new byte[(long)PageSize * BytesPerToken];
        for (int i = 0; i < pages.Length; i++)
        {
            Backend.CopyToHost(Storage.SliceRows(pages[i], 1), pageBytes);
            int tokens = Math.Min(PageSize, length - i * PageSize);
            for (int t = 0; t < tokens; t++)
            {
                LatentRecord.Decode(pageBytes.AsSpan(t * BytesPerToken, BytesPerToken), Layout,
                    result.AsSpan((i * PageSize + t) * LatentCacheFormat.HeadDim, LatentCacheFormat.HeadDim));
            }
        }
        return result;
    }

    /// <summary>Releases the pages' memory.</summary>
    public void Dispose() => _storage.Dispose();
}
