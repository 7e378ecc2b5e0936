using System.Runtime.CompilerServices;

namespace DeepKernels.Formats;

/// <summary>
/// OCP FP8 E4M3FN: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no infinities,
/// NaN = S.1111.111, largest finite magnitude 448. Conversion from <see cref="float"/> rounds
/// to nearest even and saturates to +-448 (CUDA's <c>__NV_SATFINITE</c>); NaN stays NaN.
/// </summary>
public readonly partial struct Float8E4M3 : IEquatable<Float8E4M3>
{
    /// <summary>Largest finite magnitude, 448.</summary>
    public const float MaxValue = 448f;

    /// <summary>Smallest positive subnormal, 2^-9.</summary>
    public const float Epsilon = 1f / 512f;

    /// <summary>The raw bit pattern.</summary>
    public byte RawValue { get; }

    private Float8E4M3(byte raw) => RawValue = raw;

    /// <summary>Reinterprets a byte as an E4M3 code.</summary>
    public static Float8E4M3 FromRaw(byte raw) => new(raw);

    /// <summary>The canonical NaN, 0x7F.</summary>
    public static Float8E4M3 NaN => new(0x7F);

    /// <summary>Whether this code is NaN (exponent and mantissa all ones).</summary>
    public bool IsNaN => (RawValue & 0x7F) == 0x7F;

    private static readonly float[] DecodeTable = BuildDecodeTable();

    private static float[] BuildDecodeTable()
    {
        var table = new float[256];
        for (int code = 0; code < 256; code++)
        {
            int sign = code >> 7, exponent = (code >> 3) & 0xF, mantissa = code & 7;
            float magnitude;
            if (exponent == 0xF && mantissa == 7) magnitude = float.NaN;
            else if (exponent == 0) magnitude = mantissa / 8f * MathF.Pow(2, -6);
            else magnitude = (1 + mantissa / 8f) * MathF.Pow(2, exponent - 7);
            table[code] = sign == 1 ? -magnitude : magnitude;
        }
        return table;
    }

    /// <summary>Exact decode of an E4M3 code to float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(byte raw) => DecodeTable[raw];

    /// <summary>The table of all 256 decoded values, indexed by code.</summary>
    public static ReadOnlySpan<float> DecodedValues => DecodeTable;

    /// <summary>Rounds a float to the nearest E4M3 code (ties to even), saturating at +-448.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte ToRaw(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint sign = (bits >> 24) & 0x80;
        uint abs = bits & 0x7FFF_FFFF;
        if (abs > 0x7F80_0000) return (byte)(sign | 0x7F); // NaN
        uint code;
        if (abs < 0x3C80_0000) // |x| < 2^-6: subnormal range, multiples of 2^-9
        {
            float scaled = BitConverter.UInt32BitsToSingle(abs) * 512f; // exact
            code = (uint)MathF.Round(scaled, MidpointRounding.ToEven); // 0..8; 8 is the smallest normal
        }
        else
        {
            // Round the 23-bit mantissa to 3 bits, ties to even; a carry bumps the exponent.
            uint rounded = abs + 0x7FFFF + ((abs >> 20) & 1);
            code = (rounded >> 20) - ((127 - 7) << 3);
            if (code > 0x7E) code = 0x7E; // saturate (also maps +-inf to +-448)
        }
        return (byte)(sign | code);
    }

    /// <summary>Converts a float with round-to-nearest-even and saturation.</summary>
    public static explicit operator Float8E4M3(float value) => new(ToRaw(value));

    /// <summary>Exact widening to float.</summary>
    public static explicit operator float(Float8E4M3 value) => DecodeTable[value.RawValue];

    /// <summary>Exact widening to float.</summary>
    public float ToSingle() => DecodeTable[RawValue];

    /// <inheritdoc />
    public bool Equals(Float8E4M3 other) => RawValue == other.RawValue;

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is Float8E4M3 other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => RawValue;

    /// <summary>Bitwise equality.</summary>
    public static bool operator ==(Float8E4M3 left, Float8E4M3 right) => left.Equals(right);

    /// <summary>Bitwise inequality.</summary>
    public static bool operator !=(Float8E4M3 left, Float8E4M3 right) => !left.Equals(right);

    /// <inheritdoc />
    public override string ToString() => ToSingle().ToString(System.Globalization.CultureInfo.InvariantCulture);
}
