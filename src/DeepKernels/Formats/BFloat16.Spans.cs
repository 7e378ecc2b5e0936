using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DeepKernels.Formats;

public readonly partial struct BFloat16
{
    /// <summary>
    /// Rounds floats to bfloat16 (ties to even, NaN kept quiet), bit-exact with
    /// <see cref="ToRaw(float)"/>, eight or more values at a time where SIMD is present.
    /// </summary>
    public static void FromSingle(ReadOnlySpan<float> source, Span<BFloat16> destination) =>
        FromSingle(source, MemoryMarshal.Cast<BFloat16, ushort>(destination));

    /// <summary>As <see cref="FromSingle(ReadOnlySpan{float}, Span{BFloat16})"/>, writing raw bits.</summary>
    public static void FromSingle(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        Guard.Length(destination.Length, source.Length, nameof(destination));
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float src = ref MemoryMarshal.GetReference(source);
            ref ushort dst = ref MemoryMarshal.GetReference(destination);
            for (; i <= source.Length - 16; i += 16)
            {
                var lo = EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)i));
                var hi = EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)(i + 8)));
                Vector256.Narrow(lo, hi).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < source.Length; i++) destination[i] = ToRaw(source[i]);
    }

    /// <summary>Vector form of <see cref="ToRaw(float)"/>: the 16 result bits in each 32-bit lane.</summary>
    internal static Vector256<uint> EncodeVector(Vector256<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = (bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One)) >> 16;
        var nan = (bits >> 16) | Vector256.Create(0x40u);
        var isNaN = Vector256.GreaterThan(bits & Vector256.Create(0x7FFF_FFFFu), Vector256.Create(0x7F80_0000u));
        return Vector256.ConditionalSelect(isNaN, nan, rounded);
    }

    /// <summary>Widens bfloat16 values to floats (exact).</summary>
    public static void ToSingle(ReadOnlySpan<BFloat16> source, Span<float> destination) =>
        ToSingle(MemoryMarshal.Cast<BFloat16, ushort>(source), destination);

    /// <summary>As <see cref="ToSingle(ReadOnlySpan{BFloat16}, Span{float})"/>, reading raw bits.</summary>
    public static void ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        Guard.Length(destination.Length, source.Length, nameof(destination));
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref ushort src = ref MemoryMarshal.GetReference(source);
            ref float dst = ref MemoryMarshal.GetReference(destination);
            for (; i <= source.Length - 16; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref src, (nuint)i));
                (lo << 16).AsSingle().StoreUnsafe(ref dst, (nuint)i);
                (hi << 16).AsSingle().StoreUnsafe(ref dst, (nuint)(i + 8));
            }
        }
        for (; i < source.Length; i++) destination[i] = ToSingle(source[i]);
    }
}
