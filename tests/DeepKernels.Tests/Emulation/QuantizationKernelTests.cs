using DeepKernels.Cuda;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// dk_quantize_act_fp8 and dk_dequantize_weight_fp8 run by the emulator from the same .cu source
/// the fatbin is built from, compared with the CPU reference (bit for bit) and float64.
/// </summary>
public class QuantizationKernelTests : EmulatorTestBase
{
    private static float[] Input(int m, int k, int seed)
    {
        var rng = new Random(seed);
        var x = new float[m * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 3)));
        if (x.Length > 10)
        {
            x[3] = float.NaN;
            x[7] = float.PositiveInfinity;
            x[9] = float.NegativeInfinity;
        }
        if (k >= 300)
            for (int i = 128; i < 256; i++) x[i] = 0; // an all-zero group
        if (m > 1 && k >= 128)
        {
            // A group whose amax is an exact multiple: the largest element maps to exactly 448.
            for (int i = 0; i < 128; i++) x[k + i] = (i % 7) * 0.5f;
            x[k + 5] = 448f * 0.01f;
        }
        return x;
    }

    [TestCase(1, 128, false, false)]
    [TestCase(3, 300, false, false)]
    [TestCase(3, 300, true, false)]
    [TestCase(3, 300, false, true)]
    [TestCase(2, 1000, true, true)]
    [TestCase(4, 1, false, false)]
    [TestCase(5, 7168, false, false)]
    public unsafe void QuantizeMatchesCpuReferenceBitForBit(int m, int k, bool bf16Input, bool ue8m0)
    {
        float[] x = Input(m, k, m * 31 + k);
        ulong dx;
        if (bf16Input)
        {
            var raw = new ushort[x.Length];
            for (int i = 0; i < x.Length; i++)
            {
                raw[i] = BFloat16.ToRaw(x[i]);
                x[i] = BFloat16.ToSingle(raw[i]); // the reference sees exactly what the kernel reads
            }
            dx = Upload<ushort>(raw);
        }
        else
        {
            dx = Upload<float>(x);
        }
        int groups = ActivationQuantization.GroupCount(k);
        ulong dq = Alloc(m * k);
        ulong ds = Alloc(m * groups * (ue8m0 ? 1 : 4));

        Launch("dk_quantize_act_fp8", new Dim3((uint)groups, (uint)m), new Dim3(128),
            new KernelArgs().Ptr(dx).Int(bf16Input ? 1 : 0).Ptr(dq).Ptr(ds).Int(ue8m0 ? 1 : 0).Int(m).Int(k));

        var expectedQ = new Float8E4M3[m * k];
        var expectedScales = new float[m * groups];
        ActivationQuantization.Quantize(x, k, expectedQ, expectedScales, ue8m0 ? ScaleFormat.UE8M0 : ScaleFormat.Float32);
        byte[] q = Download<byte>(dq, m * k);
        int bad = Enumerable.Range(0, q.Length).FirstOrDefault(i => q[i] != expectedQ[i].RawValue, -1);
        Assert.That(bad, Is.EqualTo(-1), () => $"q[{bad / k},{bad % k}] = 0x{q[bad]:x2}, expected 0x{expectedQ[bad].RawValue:x2} for x = {x[bad]}");
        if (ue8m0)
        {
            byte[] s = Download<byte>(ds, m * groups);
            for (int i = 0; i < s.Length; i++) Assert.That(UE8M0.ToSingle(s[i]), Is.EqualTo(expectedScales[i]), $"scale[{i}]");
        }
        else
        {
            float[] s = Download<float>(ds, m * groups);
            for (int i = 0; i < s.Length; i++)
                Assert.That(BitConverter.SingleToInt32Bits(s[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(expectedScales[i])), $"scale[{i}]");
        }
    }

    [Test]
    public void QuantizeScalesMatchFloat64Contract()
    {
        // Independent of the C# implementation: scale = max(amax over finite |x|, 1e-4) / 448.
        const int m = 2, k = 260;
        float[] x = Input(m, k, 5);
        ulong dx = Upload<float>(x), dq = Alloc(m * k), ds = Alloc(m * 3 * 4);
        Launch("dk_quantize_act_fp8", new Dim3(3, m), new Dim3(128), new KernelArgs().Ptr(dx).Int(0).Ptr(dq).Ptr(ds).Int(0).Int(m).Int(k));
        float[] s = Download<float>(ds, m * 3);
        byte[] q = Download<byte>(dq, m * k);
        for (int r = 0; r < m; r++)
            for (int g = 0; g < 3; g++)
            {
                double amax = 0;
                for (int i = g * 128; i < Math.Min(k, g * 128 + 128); i++)
                    if (double.IsFinite(x[r * k + i])) amax = Math.Max(amax, Math.Abs((double)x[r * k + i]));
                double scale = Math.Max(amax, 1e-4) / 448.0;
                Assert.That(s[r * 3 + g], Is.EqualTo(scale).Within(1e-5).Percent, $"scale[{r},{g}]");
                for (int i = g * 128; i < Math.Min(k, g * 128 + 128); i++)
                {
                    float xi = x[r * k + i];
                    float deq = Float8E4M3.ToSingle(q[r * k + i]) * s[r * 3 + g];
                    if (float.IsNaN(xi)) Assert.That(float.IsNaN(deq), $"NaN at {r},{i}");
                    else if (float.IsInfinity(xi)) Assert.That(Math.Abs(deq), Is.EqualTo(448 * s[r * 3 + g]).Within(1e-3).Percent);
                    else Assert.That(Math.Abs(deq - xi), Is.LessThanOrEqualTo(Math.Abs(xi) / 16 + scale / 1024 + 1e-30), $"x[{r},{i}] = {xi}");
                }
            }
    }

    [TestCase(1, 1, false)]
    [TestCase(130, 300, false)]
    [TestCase(130, 300, true)]
    [TestCase(7, 1100, true)]
    public void DequantizeWeightMatchesFloat64Reference(int n, int k, bool bf16Output)
    {
        var rng = new Random(n * 7 + k);
        var w = new byte[n * k];
        rng.NextBytes(w);
        for (int i = 0; i < w.Length; i++) if ((w[i] & 0x7F) == 0x7F) w[i] = 0x3C; // no NaN codes
        int nb = (n + 127) / 128, kb = (k + 127) / 128;
        var scaleInv = new float[nb * kb];
        for (int i = 0; i < scaleInv.Length; i++) scaleInv[i] = (float)Math.Pow(2, rng.Next(-10, 4)) * (1 + (float)rng.NextDouble());
        ulong dw = Upload<byte>(w), dsc = Upload<float>(scaleInv), dout = Alloc((long)n * k * (bf16Output ? 2 : 4));

        Launch("dk_dequantize_weight_fp8", new Dim3((uint)((k + 511) / 512), (uint)n), new Dim3(128),
            new KernelArgs().Ptr(dw).Ptr(dsc).Ptr(dout).Int(bf16Output ? 1 : 0).Int(n).Int(k));

        float[] got = bf16Output
            ? Array.ConvertAll(Download<ushort>(dout, n * k), BFloat16.ToSingle)
            : Download<float>(dout, n * k);
        for (int r = 0; r < n; r++)
            for (int c = 0; c < k; c++)
            {
                double expected = (double)Float8E4M3.ToSingle(w[r * k + c]) * scaleInv[(r / 128) * kb + c / 128];
                double tolerance = bf16Output ? Math.Abs(expected) / 256 : Math.Abs(expected) * 1e-7;
                if (Math.Abs(got[r * k + c] - expected) > tolerance)
                    Assert.Fail($"out[{r},{c}] = {got[r * k + c]}, expected {expected} +- {tolerance}");
            }
    }

    [TestCase(130, 300)]
    [TestCase(3, 7168)]
    public void DequantizeWeightMatchesCpuReferenceBitForBit(int n, int k)
    {
        var rng = new Random(n + k);
        var codes = new byte[n * k];
        rng.NextBytes(codes);
        for (int i = 0; i < codes.Length; i++) if ((codes[i] & 0x7F) == 0x7F) codes[i] = 0xBA; // no NaN codes
        int nb = (n + 127) / 128, kb = (k + 127) / 128;
        var scaleInv = new float[nb * kb];
        for (int i = 0; i < scaleInv.Length; i++) scaleInv[i] = (float)(rng.NextDouble() * 3 + 1e-3);
        var weight = Array.ConvertAll(codes, Float8E4M3.FromRaw);
        var expectedF32 = new float[n * k];
        var expectedBf16 = new BFloat16[n * k];
        WeightQuantization.Dequantize(weight, scaleInv, n, k, expectedF32);
        WeightQuantization.Dequantize(weight, scaleInv, n, k, expectedBf16);

        ulong dw = Upload<byte>(codes), dsc = Upload<float>(scaleInv), df = Alloc(n * k * 4), db = Alloc(n * k * 2);
        var grid = new Dim3((uint)((k + 511) / 512), (uint)n);
        Launch("dk_dequantize_weight_fp8", grid, new Dim3(128), new KernelArgs().Ptr(dw).Ptr(dsc).Ptr(df).Int(0).Int(n).Int(k));
        Launch("dk_dequantize_weight_fp8", grid, new Dim3(128), new KernelArgs().Ptr(dw).Ptr(dsc).Ptr(db).Int(1).Int(n).Int(k));
        float[] f = Download<float>(df, n * k);
        ushort[] b = Download<ushort>(db, n * k);
        AssertSame(f.Select(BitConverter.SingleToInt32Bits).ToArray(), expectedF32.Select(BitConverter.SingleToInt32Bits).ToArray(), "f32 output (row-major [n, k])");
        AssertSame(b, expectedBf16.Select(v => v.RawValue).ToArray(), "bf16 output (row-major [n, k])");
    }
}
