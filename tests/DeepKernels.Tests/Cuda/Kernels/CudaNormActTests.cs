using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Activation;
using DeepKernels.Ops.Embedding;
using DeepKernels.Ops.Norm;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>
/// The CUDA RMSNorm, SiLU-and-mul and embedding kernels (native/kernels/norm_act.cu) against the
/// CPU backend on the same inputs, plus a float64 reference so that a shared mistake also fails.
/// </summary>
[Category("Cuda")]
public class CudaNormActTests
{
    /// <summary>
    /// RMSNorm bound, relative to |CPU|. Both backends do the same FP32 steps except the order of
    /// the sum of squares (CPU: SIMD lanes, sequential per lane; CUDA: 256 strided partial sums,
    /// a warp butterfly and a fixed-order sum of the 8 warp sums). The order changes the sum by a
    /// few ulp (2^-24 relative each), halved by the square root; then sqrt, 1/x and the two
    /// products may round to different sides. 1e-6 is ~8 ulp (2^-23 = 1.19e-7): measured up to
    /// 2.9e-7 (h = 7168), and any real error (wrong weight, a missed element, eps misplaced)
    /// moves results by 1e-4 or more.
    /// </summary>
    private const double RmsRelativeBound = 1e-6;

    /// <summary>Both backends against float64: the FP32 pipeline's total error stays well inside this.</summary>
    private const double RmsReferenceBound = 4e-6;

    private static float[] RunRmsNorm(Backend backend, float[] x, float[] w, DType weightType, int rows, int h, float eps, bool inPlace)
    {
        using var input = Put(backend, x, DType.Float32, rows, h);
        using var weight = weightType == DType.Float32 ? Put(backend, w, DType.Float32, h) : Put(backend, w.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, h);
        using var output = inPlace ? null : backend.Allocate(DType.Float32, rows, h);
        var destination = output?.View ?? input.View;
        RmsNorm.Apply(backend, input, weight, eps, destination);
        backend.Synchronize();
        return backend.Download<float>(destination);
    }

    [TestCase(3, 1, DType.Float32, false)]
    [TestCase(5, 300, DType.BFloat16, false)]
    [TestCase(4, 7168, DType.BFloat16, false)]
    [TestCase(2, 7168, DType.Float32, true)]
    [TestCase(6, 129, DType.Float32, true)]
    [TestCase(2, 1536, DType.BFloat16, true)]
    public void RmsNormMatchesCpu(int rows, int h, DType weightType, bool inPlace)
    {
        var cuda = CudaTestBackends.Get();
        var rng = new Random(rows * 7919 + h);
        const float eps = 1e-6f;
        var x = Gaussian(rows * h, rng);
        // Rows of very different magnitude: tiny (eps matters), huge, and one all-zero row.
        for (int i = 0; i < h; i++) x[i] *= 1e-4f;
        if (rows > 2) for (int i = 0; i < h; i++) x[h + i] *= 1e3f;
        if (rows > 3) Array.Clear(x, 3 * h, h);
        var w = Gaussian(h, rng, 0.5);
        if (weightType == DType.BFloat16) w = w.Select(v => BFloat16.ToSingle(BFloat16.ToRaw(v))).ToArray();

        var expected = RunRmsNorm(CpuBackend.Default, x, w, weightType, rows, h, eps, inPlace);
        var actual = RunRmsNorm(cuda, x, w, weightType, rows, h, eps, inPlace);
        var again = RunRmsNorm(cuda, x, w, weightType, rows, h, eps, inPlace);
        Assert.That(again, Is.EqualTo(actual), "the CUDA reduction is deterministic");

        double worst = 0;
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < h; i++) ss += (double)x[r * h + i] * x[r * h + i];
            double inv = 1 / Math.Sqrt(ss / h + eps);
            for (int i = 0; i < h; i++)
            {
                int k = r * h + i;
                double reference = x[k] * inv * w[i];
                double scale = Math.Abs(expected[k]);
                double diff = Math.Abs((double)actual[k] - expected[k]);
                if (diff > RmsRelativeBound * scale)
                    Assert.Fail($"y[{r}, {i}]: CUDA {actual[k]:R}, CPU {expected[k]:R} (relative {diff / scale:E2} > {RmsRelativeBound:E0})");
                if (Math.Abs(actual[k] - reference) > RmsReferenceBound * Math.Abs(reference) + 1e-30)
                    Assert.Fail($"y[{r}, {i}]: CUDA {actual[k]:R}, float64 reference {reference:R}");
                if (Math.Abs(expected[k] - reference) > RmsReferenceBound * Math.Abs(reference) + 1e-30)
                    Assert.Fail($"y[{r}, {i}]: CPU {expected[k]:R}, float64 reference {reference:R}");
                if (scale > 0) worst = Math.Max(worst, diff / scale);
            }
        }
        TestContext.Out.WriteLine($"RMSNorm rows={rows} h={h} {weightType}: max relative CUDA-CPU difference {worst:E2}");
    }

    /// <summary>Distance in units in the last place (ordered bit patterns; +0 and -0 are equal).</summary>
    private static long UlpDistance(float a, float b)
    {
        static long Ordered(float f)
        {
            int bits = BitConverter.SingleToInt32Bits(f);
            return bits < 0 ? -(long)(bits & int.MaxValue) : bits;
        }
        return Math.Abs(Ordered(a) - Ordered(b));
    }

    /// <summary>
    /// SiLU*mul bounds in output ulp. Both backends run the same FP32 steps (exp(-g), 1 + e,
    /// 1 / x, times g, times u) with different exponentials (CPU: vectorised
    /// TensorPrimitives.Sigmoid; CUDA: expf, within 2 ulp on GPUs, the C library's in the
    /// emulator), so each lands a few ulp from the exact value: measured up to 2.96 ulp (CUDA
    /// emulator) and 3.48 ulp (CPU) from float64, up to 5 ulp apart. The bounds leave room for a
    /// GPU's expf; a wrong formula (a missing factor, gate and up swapped, sigmoid(+g)) is off by
    /// thousands of ulp or more.
    /// </summary>
    private const long SiluUlpBound = 8;

    /// <summary>CUDA against float64, in ulp of the (normal) exact output.</summary>
    private const double SiluReferenceUlpBound = 5;

    private static float[] RunSilu(Backend backend, float[] gateUp, int rows, int inter)
    {
        using var input = Put(backend, gateUp, DType.Float32, rows, 2 * inter);
        using var output = backend.Allocate(DType.Float32, rows, inter);
        SiluAndMul.Apply(backend, input, output);
        backend.Synchronize();
        return backend.Download<float>(output);
    }

    [TestCase(1, 1)]
    [TestCase(3, 300)]
    [TestCase(2, 7168)]
    [TestCase(5, 2048)]
    public void SiluAndMulMatchesCpu(int rows, int inter)
    {
        var cuda = CudaTestBackends.Get();
        var rng = new Random(rows * 31 + inter);
        var gateUp = Gaussian(rows * 2 * inter, rng, 3.0);
        // Saturating gates (exp overflows or vanishes), zeros and a NaN in the first row's gate.
        float[] specials = [0f, -0f, 80f, -80f, 100f, -100f, 1e30f, -1e30f, 1e-30f, float.NaN];
        for (int i = 0; i < Math.Min(inter, specials.Length); i++) gateUp[i] = specials[i];

        var expected = RunSilu(CpuBackend.Default, gateUp, rows, inter);
        var actual = RunSilu(cuda, gateUp, rows, inter);
        long worst = 0;
        double worstCudaRef = 0, worstCpuRef = 0;
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < inter; j++)
            {
                int k = r * inter + j;
                double g = gateUp[r * 2 * inter + j], u = gateUp[r * 2 * inter + inter + j];
                if (float.IsNaN(expected[k]) || float.IsNaN(actual[k]))
                {
                    Assert.That(float.IsNaN(actual[k]) && float.IsNaN(expected[k]), $"out[{r}, {j}]: CUDA {actual[k]}, CPU {expected[k]} (gate {g})");
                    continue;
                }
                long ulps = UlpDistance(actual[k], expected[k]);
                if (ulps > SiluUlpBound)
                    Assert.Fail($"out[{r}, {j}]: CUDA {actual[k]:R}, CPU {expected[k]:R} ({ulps} ulp; gate {g}, up {u})");
                double reference = g / (1 + Math.Exp(-g)) * u;
                if (Math.Abs(reference) >= 1.1754944e-38) // normal outputs; subnormal ones (gate < -87) only against the CPU above
                {
                    double ulp = MathF.BitIncrement(MathF.Abs((float)reference)) - MathF.Abs((float)reference);
                    double cudaUlps = Math.Abs(actual[k] - reference) / ulp;
                    if (cudaUlps > SiluReferenceUlpBound)
                        Assert.Fail($"out[{r}, {j}]: CUDA {actual[k]:R}, float64 reference {reference:R} ({cudaUlps:F2} ulp; gate {g}, up {u})");
                    worstCudaRef = Math.Max(worstCudaRef, cudaUlps);
                    worstCpuRef = Math.Max(worstCpuRef, Math.Abs(expected[k] - reference) / ulp);
                }
                else if (reference == 0 && actual[k] != 0)
                {
                    Assert.Fail($"out[{r}, {j}]: CUDA {actual[k]:R}, expected 0 (gate {g}, up {u})");
                }
                worst = Math.Max(worst, ulps);
            }
        }
        TestContext.Out.WriteLine($"SiLU*mul rows={rows} I={inter}: max CUDA-CPU difference {worst} ulp; from float64: CUDA {worstCudaRef:F2} ulp, CPU {worstCpuRef:F2} ulp");
    }

    [Test]
    public void SiluAndMulSplitsBatchesPastTheGridYLimit()
    {
        // 65535 + 2 rows of one column: two launches, the second starting at row 65535.
        var cuda = CudaTestBackends.Get();
        const int rows = 65537;
        var gateUp = Gaussian(rows * 2, new Random(5), 2.0);
        var expected = RunSilu(CpuBackend.Default, gateUp, rows, 1);
        var actual = RunSilu(cuda, gateUp, rows, 1);
        for (int r = 0; r < rows; r++)
        {
            if (UlpDistance(actual[r], expected[r]) > SiluUlpBound)
                Assert.Fail($"out[{r}, 0]: CUDA {actual[r]:R}, CPU {expected[r]:R}");
        }
    }

    private static float[] RunEmbedding(Backend backend, float[] table, DType tableType, int vocab, int h, int[] ids)
    {
        using var t = tableType == DType.Float32 ? Put(backend, table, DType.Float32, vocab, h) : Put(backend, table.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, vocab, h);
        using var output = backend.Allocate(DType.Float32, ids.Length, h);
        EmbeddingLookup.Gather(backend, t, ids, output);
        backend.Synchronize();
        return backend.Download<float>(output);
    }

    [TestCase(DType.BFloat16, 1)]
    [TestCase(DType.Float32, 300)]
    [TestCase(DType.BFloat16, 7168)]
    [TestCase(DType.Float32, 7168)]
    public void EmbeddingMatchesCpuExactly(DType tableType, int h)
    {
        var cuda = CudaTestBackends.Get();
        const int vocab = 37;
        var rng = new Random(h);
        var table = Gaussian(vocab * h, rng, 0.02);
        table[0] = float.NaN; // copied, never computed with
        int[] ids = [5, 0, vocab - 1, 5, 17, vocab - 1, 2];

        var expected = RunEmbedding(CpuBackend.Default, table, tableType, vocab, h, ids);
        var actual = RunEmbedding(cuda, table, tableType, vocab, h, ids);
        for (int t = 0; t < ids.Length; t++)
        {
            for (int i = 0; i < h; i++)
            {
                int k = t * h + i;
                float source = table[ids[t] * h + i];
                float want = tableType == DType.BFloat16 ? BFloat16.ToSingle(BFloat16.ToRaw(source)) : source;
                if (BitConverter.SingleToInt32Bits(actual[k]) != BitConverter.SingleToInt32Bits(expected[k]))
                    Assert.Fail($"out[{t}, {i}]: CUDA {actual[k]:R}, CPU {expected[k]:R}");
                if (!(actual[k] == want || (float.IsNaN(want) && float.IsNaN(actual[k]))))
                    Assert.Fail($"out[{t}, {i}]: CUDA {actual[k]:R}, table row {ids[t]} holds {want:R}");
            }
        }
    }

    [TestCase(-1)]
    [TestCase(37)]
    public void EmbeddingRejectsBadIdsBeforeLaunch(int badId)
    {
        var cuda = CudaTestBackends.Get();
        const int vocab = 37, h = 8;
        using var table = Put(cuda, new float[vocab * h], DType.Float32, vocab, h);
        var sentinel = Enumerable.Repeat(7f, 3 * h).ToArray();
        using var output = Put(cuda, sentinel, DType.Float32, 3, h);
        int[] ids = [1, badId, 2];
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingLookup.Gather(cuda, table, ids, output));
        Assert.That(e!.Message, Does.Contain($"ids[1] = {badId}"));
        cuda.Synchronize();
        Assert.That(cuda.Download<float>(output), Is.EqualTo(sentinel), "nothing was written");
    }

    [Test]
    public void EmptyInputsLaunchNothing()
    {
        var cuda = CudaTestBackends.Get();
        using var table = Put(cuda, new float[4 * 3], DType.Float32, 4, 3);
        using var empty = cuda.Allocate(DType.Float32, 0, 3);
        EmbeddingLookup.Gather(cuda, table, ReadOnlySpan<int>.Empty, empty);
        using var w = Put(cuda, new float[3], DType.Float32, 3);
        RmsNorm.Apply(cuda, empty, w, 1e-6f, empty);
        cuda.Synchronize();
        Assert.That(cuda.Download<float>(empty), Is.Empty);
    }
}
