using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using DeepKernels.Formats;

namespace DeepKernels.Ops.Embedding;

/// <summary>Vectorised exact bfloat16 -> float widening (a bf16 is the top half of a float).</summary>
internal static class BFloat16Widening
{
    public static void ToSingle(ReadOnlySpan<BFloat16> source, Span<float> destination) =>
        ToSingle(MemoryMarshal.Cast<BFloat16, ushort>(source), destination);

    public static void ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException($"Expected destination length >= {source.Length}, got {destination.Length}.", nameof(destination));
        int i = 0;
        var dst = MemoryMarshal.Cast<float, uint>(destination);
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= source.Length; i += 16)
            {
                var v = Vector256.Create(source.Slice(i, 16));
                var (lo, hi) = Vector256.Widen(v);
                Vector256.ShiftLeft(lo, 16).CopyTo(dst.Slice(i, 8));
                Vector256.ShiftLeft(hi, 16).CopyTo(dst.Slice(i + 8, 8));
            }
        }
        for (; i < source.Length; i++) dst[i] = (uint)source[i] << 16;
    }
}
