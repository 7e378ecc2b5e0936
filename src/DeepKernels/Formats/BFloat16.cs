using System.Runtime.CompilerServices;

namespace DeepKernels.Formats;

/// <summary>
/// bfloat16: the upper 16 bits of an IEEE float. Conversion from float rounds to nearest even
/// (as CUDA's <c>__float2bfloat16_rn</c>); NaN stays a quiet NaN.
/// </summary>
public readonly partial struct BFloat16 : IEquatable<BFloat16>
{
    /// <summary>The raw bit pattern.</summary>
    public ushort RawValue { get; }

    private BFloat16(ushort raw) => RawValue = raw;

    /// <summary>Reinterprets 16 bits as a bfloat16.</summary>
    public static BFloat16 FromRaw(ushort raw) => new(raw);

    /// <summary>Rounds a float to bfloat16 bits, ties to even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToRaw(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000) return (ushort)((bits >> 16) | 0x40);
        bits += 0x7FFF + ((bits >> 16) & 1);
        return (ushort)(bits >> 16);
    }

    /// <summary>Exact widening of bfloat16 bits to float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort raw) => BitConverter.UInt32BitsToSingle((uint)raw << 16);

    /// <summary>Exact widening to float.</summary>
    public float ToSingle() => ToSingle(RawValue);

    /// <summary>Converts a float with round-to-nearest-even.</summary>
    public static explicit operator BFloat16(float value) => new(ToRaw(value));

    /// <summary>Exact widening to float.</summary>
    public static explicit operator float(BFloat16 value) => ToSingle(value.RawValue);

    /// <inheritdoc />
    public bool Equals(BFloat16 other) => RawValue == other.RawValue;

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is BFloat16 other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => RawValue;

    /// <summary>Bitwise equality.</summary>
    public static bool operator ==(BFloat16 left, BFloat16 right) => left.Equals(right);

    /// <summary>Bitwise inequality.</summary>
    public static bool operator !=(BFloat16 left, BFloat16 right) => !left.Equals(right);

    /// <inheritdoc />
    public override string ToString() => ToSingle().ToString(System.Globalization.CultureInfo.InvariantCulture);
}
