using DeepKernels.Cuda;
using DeepKernels.Formats;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// The BF16 wgmma twins (m64nNk16, FP32 accumulate) against a plain float64 matmul: A from shared
/// memory with a K-major B, and A from registers with an MN-major (transposed) B, both over
/// TMA-loaded tiles with the 128-byte swizzle, read back through the accumulator fragment table.
/// </summary>
public class WgmmaBf16TwinTests : EmulatorTestBase
{
    private static ushort[] RandomBf16(int count, Random rng)
    {
        var v = new ushort[count];
        for (int i = 0; i < count; i++) v[i] = BFloat16.ToRaw((float)(rng.NextDouble() * 4 - 2));
        return v;
    }

    private static double F(ushort raw) => BFloat16.ToSingle(raw);

    private nint WithSharedMemory(string kernel, int bytes)
    {
        nint f = Function(kernel);
        Driver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, bytes);
        return f;
    }

    /// <summary>Checks every accumulator of every thread: d[t * perThread + 4j + i] = D[16w + g + 8(i/2)][8j + 2q + i%2].</summary>
    private static void AssertAccumulators(float[] d, int n, Func<int, int, double> expected)
    {
        int perThread = n / 2;
        for (int t = 0; t < 128; t++)
        {
            int w = t / 32, g = t % 32 / 4, q = t % 4;
            for (int j = 0; j < n / 8; j++)
                for (int i = 0; i < 4; i++)
                {
                    int row = 16 * w + g + 8 * (i >> 1), col = 8 * j + 2 * q + (i & 1);
                    double e = expected(row, col);
                    Assert.That(d[t * perThread + 4 * j + i], Is.EqualTo(e).Within(Math.Abs(e) * 1e-6 + 1e-5), $"D[{row},{col}] in thread {t}, d[{4 * j + i}]");
                }
        }
    }

    [Test]
    public void SharedMemoryAWithKMajorBMatchesMatmul()
    {
        const int m = 64, n = 32, k = 64;
        var rng = new Random(11);
        ushort[] a = RandomBf16(m * k, rng), b = RandomBf16(n * k, rng);
        ulong da = Upload<ushort>(a), db = Upload<ushort>(b), dout = Alloc(128 * 16 * 4);
        byte[] mapA = Driver.EncodeTensorMap(2, da, [k, m], [k * 2], [64, 64], 128);
        byte[] mapB = Driver.EncodeTensorMap(2, db, [k, n], [k * 2], [64, 32], 128);
        const int smem = (64 + 32) * 128;
        nint f = WithSharedMemory("dk_test_wgmma_bf16_ss", smem);
        new KernelArgs().Blob(mapA).Blob(mapB).Ptr(dout).Launch(Driver, f, new Dim3(1), new Dim3(128), smem);
        float[] d = Download<float>(dout, 128 * 16);
        AssertAccumulators(d, n, (row, col) =>
        {
            double s = 0;
            for (int kk = 0; kk < k; kk++) s += F(a[row * k + kk]) * F(b[col * k + kk]);
            return s;
        });
    }

    [Test]
    public void RegisterAWithMnMajorBMatchesMatmul()
    {
        const int m = 64, n = 128, k = 32;
        var rng = new Random(12);
        ushort[] a = RandomBf16(m * k, rng), b = RandomBf16(k * n, rng); // b stored [k][n]
        ulong da = Upload<ushort>(a), db = Upload<ushort>(b), dout = Alloc(128 * 64 * 4);
        byte[] mapB = Driver.EncodeTensorMap(2, db, [n, k], [n * 2], [64, 32], 128);
        const int smem = 2 * 32 * 128;
        nint f = WithSharedMemory("dk_test_wgmma_bf16_rs_mn", smem);
        new KernelArgs().Ptr(da).Blob(mapB).Ptr(dout).Launch(Driver, f, new Dim3(1), new Dim3(128), smem);
        float[] d = Download<float>(dout, 128 * 64);
        AssertAccumulators(d, n, (row, col) =>
        {
            double s = 0;
            for (int kk = 0; kk < k; kk++) s += F(a[row * k + kk]) * F(b[kk * n + col]);
            return s;
        });
    }
}
