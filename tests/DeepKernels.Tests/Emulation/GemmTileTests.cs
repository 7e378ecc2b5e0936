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
}
