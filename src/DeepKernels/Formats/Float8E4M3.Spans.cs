using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepKernels.Formats;

public readonly partial struct Float8E4M3
{
    /// <summary>
    /// Converts floats to E4M3 codes, bit-exact with <see cref="ToRaw(float)"/> (round to nearest
    /// even, saturating at +-448, NaN kept), eight or more values at a time where SIMD is present.
    /// </summary>
    public static void FromSingle(ReadOnlySpan<float> source, Span<Float8E4M3> destination) =>
        FromSingle(source, MemoryMarshal.AsBytes(destination));

    /// <summary>As <see cref="FromSingle(ReadOnlySpan{float}, Span{Float8E4M3})"/>, writing raw codes.</summary>
    public static void FromSingle(ReadOnlySpan<float> source, Span<byte> destination)
    {
        Guard.Length(destination.Length, source.Length, nameof(destination));
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float src = ref MemoryMarshal.GetReference(source);
            ref byte dst = ref MemoryMarshal.GetReference(destination);
            for (; i <= source.Length - 32; i += 32)
            {
                var c0 = EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)i));
                var c1 = EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)(i + 8)));
                var c2 = EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)(i + 16)));
                var c3 = EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)(i + 24)));
                var packed = Vector256.Narrow(Vector256.Narrow(c0, c1), Vector256.Narrow(c2, c3));
                packed.StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < source.Length; i++) destination[i] = ToRaw(source[i]);
    }

    /// <summary>Vector form of <see cref="ToRaw(float)"/>: one code (0..255) per 32-bit lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<uint> EncodeVector(Vector256<float> value)
    {
        var bits = value.AsUInt32();
        var sign = (bits >> 24) & Vector256.Create(0x80u);
        var abs = bits & Vector256.Create(0x7FFF_FFFFu);
        // Subnormal range: |x| * 512 is exact; adding 2^23 rounds it to an integer, ties to even.
        var sub = (Vector256.AsSingle(abs) * 512f + Vector256.Create(8388608f)).AsUInt32() - Vector256.Create(0x4B00_0000u);
        // Normal range: round the mantissa to 3 bits (ties to even), rebias, saturate to 0x7E.
        var rounded = abs + Vector256.Create(0x7FFFFu) + ((abs >> 20) & Vector256<uint>.One);
        var normal = Vector256.Min((rounded >> 20) - Vector256.Create((127u - 7u) << 3), Vector256.Create(0x7Eu));
        var code = Vector256.ConditionalSelect(Vector256.LessThan(abs, Vector256.Create(0x3C80_0000u)), sub, normal);
        code = Vector256.ConditionalSelect(Vector256.GreaterThan(abs, Vector256.Create(0x7F80_0000u)), Vector256.Create(0x7Fu), code);
        return code | sign;
    }

    /// <summary>
    /// Decodes E4M3 codes to floats (exact), bit-identical with <see cref="ToSingle(byte)"/>.
    /// </summary>
    public static void ToSingle(ReadOnlySpan<Float8E4M3> source, Span<float> destination) =>
        ToSingle(MemoryMarshal.AsBytes(source), destination);

    /// <summary>As <see cref="ToSingle(ReadOnlySpan{Float8E4M3}, Span{float})"/>, reading raw codes.</summary>
    public static void ToSingle(ReadOnlySpan<byte> source, Span<float> destination)
    {
        Guard.Length(destination.Length, source.Length, nameof(destination));
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref byte src = ref MemoryMarshal.GetReference(source);
            ref float dst = ref MemoryMarshal.GetReference(destination);
            for (; i <= source.Length - 32; i += 32)
            {
                var bytes = Vector256.LoadUnsafe(ref src, (nuint)i).AsSByte();
                var (lo16, hi16) = Vector256.Widen(bytes);
                var (v0, v1) = Vector256.Widen(lo16);
                var (v2, v3) = Vector256.Widen(hi16);
                DecodeVector(v0).StoreUnsafe(ref dst, (nuint)i);
                DecodeVector(v1).StoreUnsafe(ref dst, (nuint)(i + 8));
                DecodeVector(v2).StoreUnsafe(ref dst, (nuint)(i + 16));
                DecodeVector(v3).StoreUnsafe(ref dst, (nuint)(i + 24));
            }
        }
        for (; i < source.Length; i++) destination[i] = DecodeTable[source[i]];
    }

    private static readonly uint PositiveNaNBits = BitConverter.SingleToUInt32Bits(BuildDecodeTable()[0x7F]);
    private static readonly uint NegativeNaNBits = BitConverter.SingleToUInt32Bits(BuildDecodeTable()[0xFF]);

    // Bits of m * 2^-9 for m = 0..7: the subnormal magnitudes, looked up with a lane permute.
    private static readonly Vector256<uint> SubnormalBits = Vector256.Create(
        0u, 0x3B00_0000u, 0x3B80_0000u, 0x3BC0_0000u, 0x3C00_0000u, 0x3C20_0000u, 0x3C40_0000u, 0x3C60_0000u);

    /// <summary>
    /// Exact vector decode of sign-extended codes (one per 32-bit lane), NaN included. Pure
    /// integer work plus a permute: no FP32 subnormal arithmetic, which some CPUs run slowly.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> DecodeVector(Vector256<int> signExtended)
    {
        var t = (signExtended << 20) & Vector256.Create(unchecked((int)0x87F0_0000));
        var normal = t + Vector256.Create(120 << 23);
        var sign = t & Vector256.Create(int.MinValue);
        var sub = (Avx2.IsSupported
            ? Avx2.PermuteVar8x32(SubnormalBits.AsInt32(), signExtended)
            : Vector256.Shuffle(SubnormalBits.AsInt32(), signExtended & Vector256.Create(7))) | sign;
        var isSub = Vector256.Equals(signExtended & Vector256.Create(0x78), Vector256<int>.Zero);
        var value = Vector256.ConditionalSelect(isSub, sub, normal).AsSingle();
        var isNaN = Vector256.Equals(signExtended & Vector256.Create(0x7F), Vector256.Create(0x7F));
        var nan = Vector256.ConditionalSelect(Vector256.LessThan(signExtended, Vector256<int>.Zero).AsUInt32(),
            Vector256.Create(NegativeNaNBits), Vector256.Create(PositiveNaNBits)).AsSingle();
        return Vector256.ConditionalSelect(isNaN.AsSingle(), nan, value);
    }

    /// <summary>Whether any code in <paramref name="codes"/> is a NaN (S.1111.111).</summary>
    public static bool ContainsNaN(ReadOnlySpan<byte> codes)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var any = Vector256<byte>.Zero;
            ref byte src = ref MemoryMarshal.GetReference(codes);
            for (; i <= codes.Length - 32; i += 32)
                any |= Vector256.Equals(Vector256.LoadUnsafe(ref src, (nuint)i) & Vector256.Create((byte)0x7F), Vector256.Create((byte)0x7F));
            if (any != Vector256<byte>.Zero) return true;
        }
        for (; i < codes.Length; i++)
            if ((codes[i] & 0x7F) == 0x7F) return true;
        return false;
    }
}
