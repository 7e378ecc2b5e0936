namespace DeepKernels.Formats;

/// <summary>How block scales are stored.</summary>
public enum ScaleFormat
{
    /// <summary>One FP32 per group or block (the default, as DeepSeek-V3 checkpoints).</summary>
    Float32,

    /// <summary>One UE8M0 byte per group or block: 2^(e-127); scales are rounded up to a power of two.</summary>
    UE8M0,
}

/// <summary>UE8M0 scale bytes: an unsigned 8-bit exponent, value 2^(e-127); 0xFF is NaN.</summary>
public static class UE8M0
{
    /// <summary>Decodes a UE8M0 byte.</summary>
    public static float ToSingle(byte e) => e == 0xFF ? float.NaN : MathF.ScaleB(1f, e - 127);

    /// <summary>
    /// Encodes a positive finite scale as the smallest power of two that is &gt;= it, so that a
    /// value quantized with the rounded scale never exceeds the FP8 range.
    /// </summary>
    public static byte FromSingleRoundUp(float scale)
    {
        if (!float.IsFinite(scale) || scale <= 0)
            throw new ArgumentOutOfRangeException(nameof(scale), scale, "Expected a positive finite scale.");
        uint bits = BitConverter.SingleToUInt32Bits(scale);
        int exponent = (int)(bits >> 23);
        if (exponent == 0) return 0; // subnormal scales round up to 2^-127 at least
        if ((bits & 0x7FFFFF) != 0) exponent++;
        return (byte)Math.Min(exponent, 254);
    }

    /// <summary>Rounds a positive scale up to a power of two, as a float.</summary>
    public static float RoundUp(float scale) => ToSingle(FromSingleRoundUp(scale));
}
