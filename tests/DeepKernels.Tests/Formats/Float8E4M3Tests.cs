using DeepKernels.Formats;

namespace DeepKernels.Tests.Formats;

public class Float8E4M3Tests
{
    // Decodes a code straight from the OCP E4M3FN definition, in double.
    private static double Reference(int code)
    {
        int sign = code >> 7, e = (code >> 3) & 15, m = code & 7;
        if (e == 15 && m == 7) return double.NaN;
        double mag = e == 0 ? m / 8.0 * Math.Pow(2, -6) : (1 + m / 8.0) * Math.Pow(2, e - 7);
        return sign == 1 ? -mag : mag;
    }

    [Test]
    public void All256CodesDecodeToTheOcpValues()
    {
        for (int code = 0; code < 256; code++)
        {
            double expected = Reference(code);
            float actual = Float8E4M3.ToSingle((byte)code);
            if (double.IsNaN(expected)) Assert.That(float.IsNaN(actual), $"code {code:X2}");
            else Assert.That((double)actual, Is.EqualTo(expected), $"code {code:X2}");
        }
        Assert.That(Float8E4M3.ToSingle(0x7E), Is.EqualTo(448f));
        Assert.That(Float8E4M3.ToSingle(0x01), Is.EqualTo(1f / 512));
        Assert.That(float.IsNegative(Float8E4M3.ToSingle(0x80)), "0x80 is negative zero");
    }

    [Test]
    public void EveryCodeRoundTripsAndMidpointsRoundToEven()
    {
        for (int code = 0; code < 256; code++)
        {
            if ((code & 0x7F) == 0x7F) continue;
            float v = Float8E4M3.ToSingle((byte)code);
            Assert.That(Float8E4M3.ToRaw(v), Is.EqualTo((byte)code), $"value {v}");
        }
        // Walk consecutive positive codes: the midpoint goes to the even code, just off it to the nearer one.
        for (int code = 0; code < 0x7E; code++)
        {
            double lo = Reference(code), hi = Reference(code + 1), mid = (lo + hi) / 2;
            int even = (code & 1) == 0 ? code : code + 1;
            Assert.That(Float8E4M3.ToRaw((float)mid), Is.EqualTo((byte)even), $"midpoint of {lo} and {hi}");
            Assert.That(Float8E4M3.ToRaw(MathF.BitDecrement((float)mid)), Is.EqualTo((byte)code));
            Assert.That(Float8E4M3.ToRaw(MathF.BitIncrement((float)mid)), Is.EqualTo((byte)(code + 1)));
            Assert.That(Float8E4M3.ToRaw(-(float)mid), Is.EqualTo((byte)(0x80 | even)));
        }
    }

    [Test]
    public void SaturatesNaNStaysNaN()
    {
        Assert.That(Float8E4M3.ToRaw(448f), Is.EqualTo(0x7E));
        Assert.That(Float8E4M3.ToRaw(463.99f), Is.EqualTo(0x7E));
        Assert.That(Float8E4M3.ToRaw(1e9f), Is.EqualTo(0x7E));
        Assert.That(Float8E4M3.ToRaw(float.PositiveInfinity), Is.EqualTo(0x7E));
        Assert.That(Float8E4M3.ToRaw(float.NegativeInfinity), Is.EqualTo(0xFE));
        Assert.That(Float8E4M3.ToRaw(float.NaN) & 0x7F, Is.EqualTo(0x7F));
        Assert.That(Float8E4M3.ToRaw(-0f), Is.EqualTo(0x80));
        Assert.That(Float8E4M3.ToRaw(1f / 1024), Is.EqualTo(0x00), "half the smallest subnormal ties to zero");
        Assert.That(Float8E4M3.ToRaw(1.5f / 1024), Is.EqualTo(0x01));
    }
}
