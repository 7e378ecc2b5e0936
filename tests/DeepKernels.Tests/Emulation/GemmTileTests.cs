using System.Diagnostics;
using DeepKernels.Cuda;
using DeepKernels.Formats;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// cp.async + ldmatrix + mma.sync working together in a BF16 GEMM tile kernel
/// (native/emu/tests/test_gemm_tile.cu), against a float64 reference; also times one
/// 128 x 128 output tile with K = 512 (issue 8's emulator performance figure).
/// </summary>
public class GemmTileTests : EmulatorTestBase
{
    [TestCase(128, 128, 512)]
    [TestCase(100, 200, 64)]
    public void Bf16TileMatchesFloat64Reference(int m, int n, int k)
    {
        var rng = new Random(m + n + k);
        var a = new ushort[m * k];
        var b = new ushort[n * k];
        for (int i = 0; i < a.Length; i++) a[i] = BFloat16.ToRaw((float)(rng.NextDouble() * 2 - 1));
        for (int i = 0; i < b.Length; i++) b[i] = BFloat16.ToRaw((float)(rng.NextDouble() * 2 - 1));
        ulong da = Upload<ushort>(a), db = Upload<ushort>(b), dd = Alloc(m * n * 4);
        var sw = Stopwatch.StartNew();
        Launch("dk_test_gemm_bf16_tile", new Dim3((uint)((n + 127) / 128), (uint)((m + 127) / 128)), new Dim3(128),
            new KernelArgs().Ptr(da).Ptr(db).Ptr(dd).Int(m).Int(n).Int(k));
        TestContext.Out.WriteLine($"emulator: BF16 GEMM {m}x{n}x{k} ({(m + 127) / 128 * ((n + 127) / 128)} tile(s) of 128x128) in {sw.Elapsed.TotalMilliseconds:F0} ms");
        float[] d = Download<float>(dd, m * n);
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
            {
                double expected = 0, magnitude = 0;
                for (int kk = 0; kk < k; kk++)
                {
                    double p = (double)BFloat16.ToSingle(a[r * k + kk]) * BFloat16.ToSingle(b[c * k + kk]);
                    expected += p;
                    magnitude += Math.Abs(p);
                }
                if (Math.Abs(d[r * n + c] - expected) > magnitude * 1e-5 + 1e-6)
                    Assert.Fail($"D[{r},{c}] = {d[r * n + c]}, expected {expected}");
            }
    }

    [Test]
    public void Fp8GemmKernelOneTileWithK512()
    {
        // Issue 8's figure: one 128 x 128 output tile of the FP8 GEMM with K = 512 on one core.
        const string kernel = "dk_fp8_gemm";
        if (!Driver.KernelNames.Contains(kernel)) Assert.Ignore($"{kernel} is not in this build");
        const int m = 128, n = 128, k = 512, kb = k / 128;
        var rng = new Random(17);
        var a = new byte[m * k];
        var b = new byte[n * k];
        for (int i = 0; i < a.Length; i++) a[i] = Float8E4M3.ToRaw((float)(rng.NextDouble() * 4 - 2));
        for (int i = 0; i < b.Length; i++) b[i] = Float8E4M3.ToRaw((float)(rng.NextDouble() * 4 - 2));
        var sa = new float[m * kb];
        var sb = new float[kb];
        for (int i = 0; i < sa.Length; i++) sa[i] = (float)(0.5 + rng.NextDouble());
        for (int i = 0; i < sb.Length; i++) sb[i] = (float)(0.5 + rng.NextDouble());
        ulong da = Upload<byte>(a), dsa = Upload<float>(sa), db = Upload<byte>(b), dsb = Upload<float>(sb), dd = Alloc(m * n * 4);
        const uint smem = 98304;
        nint f = Function(kernel);
        Driver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, (int)smem);
        // sa_ue8m0, sb_ue8m0, out_bf16, accumulate = 0; one split (k_blocks_per_split and workspace unused).
        var args = new KernelArgs().Ptr(da).Ptr(dsa).Ptr(db).Ptr(dsb).Ptr(dd).Int(m).Int(n).Int(k).Int(0).Int(0).Int(0).Int(0).Int(kb).Ptr(0);
        var sw = Stopwatch.StartNew();
        args.Launch(Driver, f, new Dim3(1, 1), new Dim3(256), smem);
        double ms = sw.Elapsed.TotalMilliseconds;
        TestContext.Out.WriteLine($"emulator: {kernel} one 128x128 tile, K = {k}: {ms:F0} ms");
        float[] d = Download<float>(dd, m * n);
        double xy = 0, xx = 0, yy = 0;
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
            {
                double expected = 0;
                for (int kk = 0; kk < k; kk++)
                    expected += (double)Float8E4M3.ToSingle(a[r * k + kk]) * sa[r * kb + kk / 128] * Float8E4M3.ToSingle(b[c * k + kk]) * sb[kk / 128];
                xy += expected * d[r * n + c];
                xx += expected * expected;
                yy += (double)d[r * n + c] * d[r * n + c];
            }
        Assert.That(1 - 2 * xy / (xx + yy), Is.LessThan(1e-3), "calc_diff against float64");
    }
}
