using DeepKernels.Cuda;
using DeepKernels.Formats;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// The Hopper wrapper twins: TMA loads (box, out-of-bounds zero fill, the 128-byte swizzle,
/// completion on an mbarrier only when waited for), wgmma m64nNk32 E4M3 over TMA-loaded tiles
/// against the accumulator fragment table, and named barriers.
/// </summary>
public class HopperTwinTests : EmulatorTestBase
{
    private byte[] Map2D(ulong global, int rows, int cols, uint boxCols, uint boxRows, int swizzle) =>
        Driver.EncodeTensorMap(1, global, [(ulong)cols, (ulong)rows], [(ulong)cols], [boxCols, boxRows], swizzle);

    private nint WithSharedMemory(string kernel, int bytes)
    {
        nint f = Function(kernel);
        Driver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, bytes);
        return f;
    }

    [TestCase(0, 0, 0)]
    [TestCase(128, 0, 0)]
    [TestCase(128, 64, 8)]
    [TestCase(0, 96, 60)] // the box hangs over the right and bottom edges: zero fill
    public void TmaLoadCopiesTheBoxWithSwizzleAndZeroFill(int swizzle, int c0, int c1)
    {
        const int rows = 64, cols = 160;
        const uint boxCols = 128, boxRows = 16;
        var g = new byte[rows * cols];
        for (int i = 0; i < g.Length; i++) g[i] = (byte)(i * 7 + 3);
        ulong dg = Upload<byte>(g), dout = Alloc(boxCols * boxRows);
        byte[] map = Map2D(dg, rows, cols, boxCols, boxRows, swizzle);
        nint f = WithSharedMemory("dk_test_tma_load", 4096);
        var args = new KernelArgs().Blob(map).Int(c0).Int(c1).Int((int)(boxCols * boxRows)).Ptr(dout).Int(0);
        args.Launch(Driver, f, new Dim3(1), new Dim3(128), 4096);
        byte[] smem = Download<byte>(dout, (int)(boxCols * boxRows));
        for (int r = 0; r < boxRows; r++)
            for (int c = 0; c < boxCols; c++)
            {
                int gr = c1 + r, gc = c0 + c;
                byte expected = gr < rows && gc < cols ? g[gr * cols + gc] : (byte)0;
                int linear = r * (int)boxCols + c;
                // 128-byte swizzle: the 16-byte chunk index (bits 4-6) is XORed with bits 7-9.
                int physical = swizzle == 128 ? linear ^ (((linear >> 7) & 7) << 4) : linear;
                Assert.That(smem[physical], Is.EqualTo(expected), $"box ({r},{c})");
            }
    }

    [Test]
    public void TmaDataLandsOnlyWhenTheMbarrierIsWaitedFor()
    {
        var g = new byte[16 * 128];
        Array.Fill(g, (byte)5);
        ulong dg = Upload<byte>(g), dout = Alloc(16 * 128);
        nint f = WithSharedMemory("dk_test_tma_load", 4096);
        var args = new KernelArgs().Blob(Map2D(dg, 16, 128, 128, 16, 128)).Int(0).Int(0).Int(16 * 128).Ptr(dout).Int(1);
        args.Launch(Driver, f, new Dim3(1), new Dim3(128), 4096);
        Assert.That(Download<byte>(dout, 16 * 128), Is.All.EqualTo((byte)0xFF), "no thread waited: the copy never landed");
    }

    [Test]
    public void TensorMapEncodingRejectsBadLayouts()
    {
        ulong dg = Alloc(4096);
        Assert.That(() => Map2D(dg + 1, 16, 128, 128, 16, 0), Throws.TypeOf<CudaException>().With.Message.Contains("16-byte aligned"));
        Assert.That(() => Map2D(dg, 16, 100, 100, 16, 0), Throws.TypeOf<CudaException>().With.Message.Contains("multiple of 16"));
        Assert.That(() => Map2D(dg, 16, 256, 256, 16, 128), Throws.TypeOf<CudaException>().With.Message.Contains("swizzle span"));
        Assert.That(() => Map2D(dg, 16, 128, 128, 300, 0), Throws.TypeOf<CudaException>());
    }

    [Test]
    public void WgmmaE4M3MatchesTheAccumulatorTable()
    {
        const int m = 64, n = 32, k = 128;
        var rng = new Random(9);
        byte RandomCode() { byte c; do c = (byte)rng.Next(256); while ((c & 0x7F) == 0x7F || (c & 0x78) > 0x48); return c; }
        var a = new byte[m * k];
        var b = new byte[n * k];
        for (int i = 0; i < a.Length; i++) a[i] = RandomCode();
        for (int i = 0; i < b.Length; i++) b[i] = RandomCode();
        ulong da = Upload<byte>(a), db = Upload<byte>(b), dout = Alloc(128 * 16 * 4);
        byte[] mapA = Map2D(da, m, k, 128, 64, 128), mapB = Map2D(db, n, k, 128, 32, 128);
        const int smem = (64 + 32) * 128;
        nint f = WithSharedMemory("dk_test_wgmma_e4m3", smem);
        new KernelArgs().Blob(mapA).Blob(mapB).Ptr(dout).Launch(Driver, f, new Dim3(1), new Dim3(128), smem);
        float[] d = Download<float>(dout, 128 * 16);
        for (int t = 0; t < 128; t++)
        {
            int w = t / 32, g = t % 32 / 4, q = t % 4;
            for (int j = 0; j < n / 8; j++)
                for (int i = 0; i < 4; i++)
                {
                    int row = 16 * w + g + 8 * (i >> 1), col = 8 * j + 2 * q + (i & 1);
                    double expected = 0;
                    for (int kk = 0; kk < k; kk++) expected += (double)Float8E4M3.ToSingle(a[row * k + kk]) * Float8E4M3.ToSingle(b[col * k + kk]);
                    Assert.That(d[t * 16 + 4 * j + i], Is.EqualTo(expected).Within(Math.Abs(expected) * 1e-6 + 1e-6), $"D[{row},{col}] in thread {t}, d[{4 * j + i}]");
                }
        }
    }

    [Test]
    public void NamedBarriersSynchroniseOnlyTheirGroup()
    {
        var input = Enumerable.Range(0, 256).Select(i => i * 3 + 1).ToArray();
        ulong din = Upload<int>(input), dout = Alloc(256 * 4);
        Launch("dk_test_named_barrier", new Dim3(1), new Dim3(256), new KernelArgs().Ptr(din).Ptr(dout));
        int[] got = Download<int>(dout, 256);
        for (int t = 0; t < 256; t++) Assert.That(got[t], Is.EqualTo(input[t / 128 * 128 + (t % 128 + 64) % 128]), $"thread {t}");
    }
}
