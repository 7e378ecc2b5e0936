using System.Runtime.InteropServices;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;

namespace DeepKernels.Memory.KvCache;

/// <summary>Encoding and decoding of one token record of the latent cache (host side, the reference semantics).</summary>
internal static class LatentRecord
{
    /// <summary>Encodes one 576-value latent into its cache record (layout in <see cref="LatentCacheFormat"/>).</summary>
    public static void Encode(ReadOnlySpan<float> latent, LatentCacheLayout layout, Span<byte> record)
    {
        const int L = LatentCacheFormat.LatentDim, R = LatentCacheFormat.RopeDim, G = LatentCacheFormat.Fp8GroupSize;
        if (layout == LatentCacheLayout.BFloat16)
        {
            var dst = MemoryMarshal.Cast<byte, ushort>(record);
            for (int j = 0; j < L + R; j++) dst[j] = BFloat16.ToRaw(latent[j]);
            return;
        }
        var fp8 = MemoryMarshal.Cast<byte, Float8E4M3>(record[..L]);
        var scales = MemoryMarshal.Cast<byte, float>(record.Slice(LatentCacheFormat.Fp8ScalesOffset, LatentCacheFormat.Fp8Groups * 4));
        for (int g = 0; g < LatentCacheFormat.Fp8Groups; g++)
            scales[g] = ActivationQuantization.QuantizeGroup(latent.Slice(g * G, G), fp8.Slice(g * G, G), ScaleFormat.Float32);
        var rope = MemoryMarshal.Cast<byte, ushort>(record.Slice(LatentCacheFormat.Fp8RopeOffset, R * 2));
        for (int j = 0; j < R; j++) rope[j] = BFloat16.ToRaw(latent[L + j]);
    }

    /// <summary>Decodes one cache record into 576 floats (exact widening of the stored values).</summary>
    public static void Decode(ReadOnlySpan<byte> record, LatentCacheLayout layout, Span<float> latent)
    {
        const int L = LatentCacheFormat.LatentDim, R = LatentCacheFormat.RopeDim, G = LatentCacheFormat.Fp8GroupSize;
        if (layout == LatentCacheLayout.BFloat16)
        {
            var src = MemoryMarshal.Cast<byte, ushort>(record[..((L + R) * 2)]);
            for (int j = 0; j < L + R; j++) latent[j] = BFloat16.ToSingle(src[j]);
            return;
        }
        var scales = MemoryMarshal.Cast<byte, float>(record.Slice(LatentCacheFormat.Fp8ScalesOffset, LatentCacheFormat.Fp8Groups * 4));
        var table = Float8E4M3.DecodedValues;
        for (int j = 0; j < L; j++) latent[j] = table[record[j]] * scales[j / G];
        var rope = MemoryMarshal.Cast<byte, ushort>(record.Slice(LatentCacheFormat.Fp8RopeOffset, R * 2));
        for (int j = 0; j < R; j++) latent[L + j] = BFloat16.ToSingle(rope[j]);
    }
}
