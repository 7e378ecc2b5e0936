using DeepKernels.Formats;

namespace DeepKernels.Tests.Formats;

public class Float8E4M3SpanTests
{
    private static double Reference(int code)
    {
        int sign = code >> 7, e = (code >> 3) & 15, m = code & 7;
        if (e == 15 && m == 7) return double.NaN;
        double mag = e == 0 ? m / 8.0 * Math.Pow(2, -6) : (1 + m / 8.0) * Math.Pow(2, e - 7);
        return sign == 1 ? -mag : mag;
    }

    // Nearest finite E4M3 code by brute force in double, ties to the even code, saturating.
    private static byte NearestEven(float x)
    {
        if (float.IsNaN(x)) return (byte)(float.IsNegative(x) ? 0xFF : 0x7F);
        double a = Math.Abs((double)x);
        int best = 0;
        double bestErr = double.PositiveInfinity;
        for (int code = 0; code <= 0x7E; code++)
        {
            double err = Math.Abs(Reference(code) - a);
            if (err < bestErr || (err == bestErr && (code & 1) == 0)) { best = code; bestErr = err; }
        }
        return (byte)((float.IsNegative(x) ? 0x80 : 0) | best);
    }

    private static IEnumerable<float> EdgeValues()
    {
        for (int code = 0; code < 256; code++)
        {
            float v = Float8E4M3.ToSingle((byte)code);
            yield return v;
            yield return MathF.BitIncrement(v);
            yield return MathF.BitDecrement(v);
            if ((code & 0x7F) < 0x7E)
            {
                float mid = (float)((Reference(code) + Reference(code + 1)) / 2);
                yield return mid; yield return -mid; yield return MathF.BitIncrement(mid); yield return MathF.BitDecrement(mid);
            }
        }
        foreach (float v in new[] { 0f, -0f, 448f, 464f, 479.9f, 480f, 1e30f, float.MaxValue, float.PositiveInfinity, float.NegativeInfinity,
                     float.NaN, -float.NaN, BitConverter.UInt32BitsToSingle(0x7F80_0001), BitConverter.UInt32BitsToSingle(0xFFFF_FFFF),
                     float.Epsilon, -float.Epsilon, 1f / 1024, 1.5f / 1024, -1f / 1024, 1f / 2048, 1e-30f })
            yield return v;
    }

    [Test]
    public void SpanDecodeIsBitIdenticalToTheTableForAllCodes()
    {
        var codes = Enumerable.Range(0, 256 * 3 + 5).Select(i => (byte)(i * 7)).ToArray(); // all codes, odd tail length
        var values = new float[codes.Length];
        Float8E4M3.ToSingle(codes, values);
        for (int i = 0; i < codes.Length; i++)
            Assert.That(BitConverter.SingleToUInt32Bits(values[i]), Is.EqualTo(BitConverter.SingleToUInt32Bits(Float8E4M3.ToSingle(codes[i]))), $"code {codes[i]:X2}");
        var typed = codes.Select(Float8E4M3.FromRaw).ToArray();
        var values2 = new float[typed.Length];
        Float8E4M3.ToSingle(typed, values2);
        Assert.That(values2.Select(BitConverter.SingleToUInt32Bits), Is.EqualTo(values.Select(BitConverter.SingleToUInt32Bits)));
    }

    [Test]
    public void SpanEncodeMatchesScalarOnEdgeValues()
    {
        var x = EdgeValues().ToArray();
        var codes = new byte[x.Length];
        Float8E4M3.FromSingle(x, codes);
        for (int i = 0; i < x.Length; i++)
            Assert.That(codes[i], Is.EqualTo(Float8E4M3.ToRaw(x[i])), $"value {x[i]} (bits {BitConverter.SingleToUInt32Bits(x[i]):X8})");
    }

    [Test]
    public void SpanEncodeMatchesScalarOnASweepOfAllBitPatterns()
    {
        // Every 257th 32-bit pattern (~16.7M floats, all exponents and signs) in chunks.
        const int chunk = 1 << 20;
        var x = new float[chunk];
        var codes = new byte[chunk];
        long pattern = 0;
        while (pattern < (1L << 32))
        {
            int count = 0;
            for (; count < chunk && pattern < (1L << 32); count++, pattern += 257) x[count] = BitConverter.UInt32BitsToSingle((uint)pattern);
            Float8E4M3.FromSingle(x.AsSpan(0, count), codes.AsSpan(0, count));
            for (int i = 0; i < count; i++)
                if (codes[i] != Float8E4M3.ToRaw(x[i]))
                    Assert.Fail($"bits {BitConverter.SingleToUInt32Bits(x[i]):X8}: span {codes[i]:X2}, scalar {Float8E4M3.ToRaw(x[i]):X2}");
        }
    }

    [Test]
    public void EncodeRoundsToTheNearestCodeTiesToEvenOnRandomValues()
    {
        var rng = new Random(4);
        var x = new float[20000];
        for (int i = 0; i < x.Length; i++)
        {
            double mag = Math.Pow(2, rng.NextDouble() * 20 - 11); // 2^-11 .. 2^9: subnormals through saturation
            x[i] = (float)(rng.Next(2) == 0 ? mag : -mag);
        }
        var codes = new byte[x.Length];
        Float8E4M3.FromSingle(x, codes);
        for (int i = 0; i < x.Length; i++)
            Assert.That(codes[i], Is.EqualTo(NearestEven(x[i])), $"value {x[i]:R}");
    }

    [Test]
    public void SubnormalsNegativeZeroAndSaturation()
    {
        float[] x = [1f / 512, 3f / 512, 7f / 512, 8f / 512, 2.5f / 512, 3.5f / 512, -0f, -1f / 2048, 500f, -1e20f, float.PositiveInfinity, float.NaN];
        byte[] expected = [0x01, 0x03, 0x07, 0x08, 0x02, 0x04, 0x80, 0x80, 0x7E, 0xFE, 0x7E, 0x7F];
        var codes = new byte[x.Length];
        Float8E4M3.FromSingle(x, codes);
        for (int i = 0; i < x.Length; i++)
            Assert.That(codes[i] & (float.IsNaN(x[i]) ? 0x7F : 0xFF), Is.EqualTo(expected[i]), $"value {x[i]}");
        Assert.That(float.IsNegative(Float8E4M3.ToSingle(0x80)) && Float8E4M3.ToSingle(0x80) == 0);
        Assert.That(Float8E4M3.ToSingle(0x08), Is.EqualTo(1f / 64), "smallest normal");
        Assert.That(Float8E4M3.ToSingle(0x07), Is.EqualTo(7f / 512), "largest subnormal");
    }

    [Test]
    public void ContainsNaNFindsNaNCodesAnywhere()
    {
        var codes = new byte[100];
        Assert.That(Float8E4M3.ContainsNaN(codes), Is.False);
        codes[70] = 0xFF;
        Assert.That(Float8E4M3.ContainsNaN(codes), Is.True);
        codes[70] = 0x7E;
        codes[99] = 0x7F;
        Assert.That(Float8E4M3.ContainsNaN(codes), Is.True);
    }

    [Test]
    public void SpanConversionsRejectMismatchedLengths()
    {
        Assert.Throws<ArgumentException>(() => Float8E4M3.FromSingle(new float[4], new byte[3]));
        Assert.Throws<ArgumentException>(() => Float8E4M3.ToSingle(new byte[4], new float[5]));
    }
}
