using DeepKernels.Formats;

namespace DeepKernels.Tests.Formats;

public class BFloat16Tests
{
    // Nearest bfloat16 in double: the two candidates that bracket x, ties to the even mantissa.
    private static ushort Reference(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        ushort lo = (ushort)(bits >> 16);
        if ((bits & 0xFFFF) == 0) return lo;
        ushort hi = (ushort)(lo + 1);
        double dl = Math.Abs(BFloat16.ToSingle(lo) - (double)x);
        double dh = float.IsInfinity(BFloat16.ToSingle(hi)) && !float.IsInfinity(x)
            ? Math.Abs(Math.Pow(2, 128) - Math.Abs((double)x)) // overflow rounds like the next binade
            : Math.Abs(BFloat16.ToSingle(hi) - (double)x);
        if (dl < dh) return lo;
        if (dh < dl) return hi;
        return (lo & 1) == 0 ? lo : hi;
    }

    [Test]
    public void ScalarRoundsToNearestEven()
    {
        var rng = new Random(16);
        for (int i = 0; i < 20000; i++)
        {
            float x = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
            if (float.IsNaN(x) || float.IsInfinity(x)) continue;
            Assert.That(BFloat16.ToRaw(x), Is.EqualTo(Reference(x)), $"bits {BitConverter.SingleToUInt32Bits(x):X8}");
        }
        Assert.That(BFloat16.ToRaw(1f + 1f / 256), Is.EqualTo((ushort)0x3F80), "tie to even (down)");
        Assert.That(BFloat16.ToRaw(1f + 3f / 256), Is.EqualTo((ushort)0x3F82), "tie to even (up)");
        Assert.That(float.IsNaN(BFloat16.ToSingle(BFloat16.ToRaw(float.NaN))));
    }

    [Test]
    public void SpanConversionsMatchScalarOnASweep()
    {
        var x = new float[(1 << 20) + 3];
        var rng = new Random(17);
        for (int i = 0; i < x.Length; i++) x[i] = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
        x[0] = float.NaN; x[1] = -0f; x[2] = float.PositiveInfinity; x[5] = float.MaxValue; x[6] = BitConverter.UInt32BitsToSingle(0x7F80_0001);
        var raw = new ushort[x.Length];
        BFloat16.FromSingle(x, raw);
        for (int i = 0; i < x.Length; i++)
            if (raw[i] != BFloat16.ToRaw(x[i])) Assert.Fail($"bits {BitConverter.SingleToUInt32Bits(x[i]):X8}: span {raw[i]:X4}, scalar {BFloat16.ToRaw(x[i]):X4}");
        var back = new float[x.Length];
        BFloat16.ToSingle(raw, back);
        for (int i = 0; i < x.Length; i++)
            if (BitConverter.SingleToUInt32Bits(back[i]) != (uint)raw[i] << 16) Assert.Fail($"widening of {raw[i]:X4}");
        var typed = new BFloat16[x.Length];
        BFloat16.FromSingle(x, typed);
        Assert.That(typed[7].RawValue, Is.EqualTo(raw[7]));
        var back2 = new float[x.Length];
        BFloat16.ToSingle(typed, back2);
        Assert.That(back2[9], Is.EqualTo(back[9]));
    }
}
