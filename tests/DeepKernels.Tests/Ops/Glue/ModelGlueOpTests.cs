using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Elementwise;
using DeepKernels.Ops.Matmul;
using DeepKernels.Ops.Mla;
using DeepKernels.Ops.Rope;
using DeepKernels.Tensors;
using DeepKernels.Tests.Cuda;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Ops.Glue;

/// <summary>
/// The model-graph glue ops (BatchedMatmul, RotaryEmbedding, Elementwise) on the CPU backend
/// against float64 references written here, their validation, and the CUDA kernels
/// (native/kernels/model_glue.cu) against the CPU backend on the same inputs.
/// </summary>
public class ModelGlueOpTests
{
    private static readonly CpuBackend Cpu = new();

    /// <summary>A strided view over a buffer: shape and element strides given explicitly.</summary>
    private static TensorView View(TensorBuffer buffer, long offset, long[] shape, long[] strides) =>
        new(buffer.View.Data + (nint)(offset * buffer.View.DType.SizeInBytes()), buffer.View.DType, buffer.View.Location, shape, strides);

    /// <summary>
    /// The absorption shape: A = q_nope slices of a [t, heads, 192] tensor (batch = heads), B = W^T
    /// through strides of [heads, K, N], C written into a column slice of a [t, heads, 576] tensor.
    /// Returns the C buffer contents.
    /// </summary>
    private static float[] RunAbsorption(Backend backend, float[] q, float[] w, float[] c0, int t, int heads, int k, int n, bool bf16, bool accumulate)
    {
        int qk = k + 7, width = n + 5;
        using var qb = Put(backend, q, DType.Float32, t, heads, qk);
        using var wb = bf16 ? Put(backend, w.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, heads, k, n) : Put(backend, w, DType.Float32, heads, k, n);
        using var cb = Put(backend, c0, DType.Float32, t, heads, width);
        var a = View(qb, 0, [heads, t, k], [qk, (long)heads * qk, 1]);
        var bT = View(wb, 0, [heads, n, k], [(long)k * n, 1, n]);
        var c = View(cb, 2, [heads, t, n], [width, (long)heads * width, 1]);
        BatchedMatmul.Run(backend, a, bT, c, accumulate);
        backend.Synchronize();
        return backend.Download<float>(cb.View);
    }

    private static double[] AbsorptionReference(float[] q, float[] w, float[] c0, int t, int heads, int k, int n, bool bf16, bool accumulate)
    {
        int qk = k + 7, width = n + 5;
        var result = c0.Select(v => (double)v).ToArray();
        for (int r = 0; r < t; r++)
            for (int h = 0; h < heads; h++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int x = 0; x < k; x++)
                    {
                        double wv = bf16 ? BFloat16.ToSingle(BFloat16.ToRaw(w[(h * k + x) * n + j])) : w[(h * k + x) * n + j];
                        s += (double)q[(r * heads + h) * qk + x] * wv;
                    }
                    int at = (r * heads + h) * width + 2 + j;
                    result[at] = accumulate ? result[at] + s : s;
                }
        return result;
    }

    private static (float[] Q, float[] W, float[] C) AbsorptionInputs(int t, int heads, int k, int n, int seed)
    {
        var rng = new Random(seed);
        return (Gaussian(t * heads * (k + 7), rng), Gaussian(heads * k * n, rng, 0.1), Gaussian(t * heads * (n + 5), rng));
    }

    [TestCase(3, 4, 128, 512, false, false)]
    [TestCase(1, 2, 37, 19, true, false)]
    [TestCase(5, 3, 17, 33, false, true)]
    public void BatchedMatmulMatchesAFloat64Reference(int t, int heads, int k, int n, bool bf16, bool accumulate)
    {
        var (q, w, c0) = AbsorptionInputs(t, heads, k, n, t * 31 + k);
        var actual = RunAbsorption(Cpu, q, w, c0, t, heads, k, n, bf16, accumulate);
        var expected = AbsorptionReference(q, w, c0, t, heads, k, n, bf16, accumulate);
        for (int i = 0; i < expected.Length; i++)
            // FP32 accumulation over k terms of size ~0.1 |q|: k * 2^-24 relative to sum |x w| bounds the error.
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5 * (1 + Math.Abs(expected[i]))), $"element {i}");
    }

    [Test]
    public void BatchedMatmulRejectsMismatchedShapesAndNegativeStrides()
    {
        using var a = Cpu.Allocate(DType.Float32, 2, 3, 4);
        using var b = Cpu.Allocate(DType.Float32, 2, 5, 4);
        using var c = Cpu.Allocate(DType.Float32, 2, 3, 5);
        using var wrongK = Cpu.Allocate(DType.Float32, 2, 5, 3);
        using var half = Cpu.Allocate(DType.Float16, 2, 5, 4);
        var ex = Assert.Throws<ArgumentException>(() => BatchedMatmul.Run(Cpu, a.View, wrongK.View, c.View))!;
        Assert.That(ex.ParamName, Is.EqualTo("b"));
        Assert.Throws<ArgumentException>(() => BatchedMatmul.Run(Cpu, a.View, half.View, c.View));
        Assert.Throws<ArgumentException>(() => BatchedMatmul.Run(Cpu, a.View, b.View, b.View));
        var negative = new TensorView(a.View.Data + 64, DType.Float32, MemoryLocation.Host, [2, 3, 4], [12, -4, 1]);
        ex = Assert.Throws<ArgumentException>(() => BatchedMatmul.Run(Cpu, negative, b.View, c.View))!;
        Assert.That(ex.Message, Does.Contain("non-negative"));
        using var square = Cpu.Allocate(DType.Float32, 3, 3);
        ex = Assert.Throws<ArgumentException>(() => BatchedMatmul.Run(Cpu, square.View, square.View, square.View))!;
        Assert.That(ex.ParamName, Is.EqualTo("c"));
    }

    private static float[] RunRope(Backend backend, float[] x, int[] positions, float[] cos, float[] sin, int t, int heads, int half, bool inPlace)
    {
        int d = 2 * half, rowStride = heads * (d + 3);
        using var xb = Put(backend, x, DType.Float32, t, heads, d + 3);
        using var cb = Put(backend, cos, DType.Float32, cos.Length / half, half);
        using var sb = Put(backend, sin, DType.Float32, sin.Length / half, half);
        using var ob = Put(backend, new float[t * heads * d], DType.Float32, t, heads, d);
        var input = View(xb, 3, [t, heads, d], [rowStride, d + 3, 1]);
        var output = inPlace ? input : ob.View;
        RotaryEmbedding.Apply(backend, input, positions, cb.View, sb.View, output);
        backend.Synchronize();
        return inPlace ? backend.Download<float>(xb.View) : backend.Download<float>(ob.View);
    }

    [TestCase(3, 4, 32, false)]
    [TestCase(2, 1, 32, true)]
    public void RotaryEmbeddingMatchesYarnRope(int t, int heads, int half, bool inPlace)
    {
        var rope = new YarnRope(2 * half, 10000, YarnScaling.DeepSeekV3);
        int maxPos = 50, d = 2 * half;
        var cos = new float[maxPos * half];
        var sin = new float[maxPos * half];
        for (int p = 0; p < maxPos; p++) rope.CosSin(p, cos.AsSpan(p * half, half), sin.AsSpan(p * half, half));
        var rng = new Random(t + heads);
        var x = Gaussian(t * heads * (d + 3), rng);
        int[] positions = Enumerable.Range(0, t).Select(i => (i * 17 + 3) % maxPos).ToArray();
        var actual = RunRope(Cpu, x, positions, cos, sin, t, heads, half, inPlace);
        for (int r = 0; r < t; r++)
            for (int h = 0; h < heads; h++)
            {
                int src = r * heads * (d + 3) + h * (d + 3) + 3;
                var expected = x.AsSpan(src, d).ToArray();
                rope.Apply(expected, positions[r]); // float64 rotation, rounded once per element
                int dst = inPlace ? src : (r * heads + h) * d;
                for (int i = 0; i < d; i++)
                    Assert.That(actual[dst + i], Is.EqualTo(expected[i]).Within(4e-6), $"row {r} head {h} element {i}");
            }
    }

    [Test]
    public void RotaryEmbeddingRejectsPositionsOutsideTheTable()
    {
        using var x = Cpu.Allocate(DType.Float32, 2, 1, 4);
        using var table = Cpu.Allocate(DType.Float32, 8, 2);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => RotaryEmbedding.Apply(Cpu, x.View, [1, 8], table.View, table.View, x.View))!;
        Assert.That(ex.Message, Does.Contain("positions[1]"));
        Assert.Throws<ArgumentException>(() => RotaryEmbedding.Apply(Cpu, x.View, [1], table.View, table.View, x.View));
        using var odd = Cpu.Allocate(DType.Float32, 2, 1, 3);
        Assert.Throws<ArgumentException>(() => RotaryEmbedding.Apply(Cpu, odd.View, [1, 2], table.View, table.View, odd.View));
    }

    private static float[] RunAddAndCopy(Backend backend, float[] a, float[] b, int rows, int cols)
    {
        // out[:, 1:1+cols] of a [rows, cols + 3] tensor = a + b (b read transposed), then a copy of it back into a.
        using var ab = Put(backend, a, DType.Float32, rows, cols);
        using var bb = Put(backend, b, DType.Float32, cols, rows);
        using var ob = Put(backend, new float[rows * (cols + 3)], DType.Float32, rows, cols + 3);
        var output = View(ob, 1, [rows, cols], [cols + 3, 1]);
        Elementwise.Add(backend, ab.View, View(bb, 0, [rows, cols], [1, rows]), output);
        Elementwise.Add(backend, ab.View, ab.View, ab.View);
        Elementwise.Copy(backend, output, ab.View);
        backend.Synchronize();
        return [.. backend.Download<float>(ob.View), .. backend.Download<float>(ab.View)];
    }

    [Test]
    public void ElementwiseAddAndCopyMatchPlainLoops()
    {
        int rows = 3, cols = 300;
        var rng = new Random(9);
        var a = Gaussian(rows * cols, rng);
        var b = Gaussian(rows * cols, rng);
        var actual = RunAddAndCopy(Cpu, a, b, rows, cols);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++)
            {
                float sum = a[r * cols + j] + b[j * rows + r];
                Assert.That(actual[r * (cols + 3) + 1 + j], Is.EqualTo(sum), $"add [{r}, {j}]");
                Assert.That(actual[rows * (cols + 3) + r * cols + j], Is.EqualTo(sum), $"copy [{r}, {j}]");
            }
        Assert.That(actual[0], Is.EqualTo(0f), "untouched column");
        Assert.Throws<ArgumentException>(() => Elementwise.Add(Cpu, new TensorView(0, DType.Float32, MemoryLocation.Host, 2, 2), new TensorView(0, DType.Float32, MemoryLocation.Host, 2, 3), new TensorView(0, DType.Float32, MemoryLocation.Host, 2, 2)));
    }

    [TestCase(3, 4, 128, 512, false, false)]
    [TestCase(2, 1, 512, 2048, true, false)]
    [TestCase(5, 3, 17, 33, false, true)]
    [Category("Cuda")]
    public void CudaBatchedMatmulMatchesCpu(int t, int heads, int k, int n, bool bf16, bool accumulate)
    {
        var cuda = CudaTestBackends.Get();
        var (q, w, c0) = AbsorptionInputs(t, heads, k, n, t * 13 + n);
        var cpu = RunAbsorption(Cpu, q, w, c0, t, heads, k, n, bf16, accumulate);
        var gpu = RunAbsorption(cuda, q, w, c0, t, heads, k, n, bf16, accumulate);
        // Both sum over k in ascending order with one FMA per term: equal up to FMA contraction differences (none expected).
        for (int i = 0; i < cpu.Length; i++)
            Assert.That(gpu[i], Is.EqualTo(cpu[i]).Within(1e-6 * (1 + Math.Abs(cpu[i]))), $"element {i}");
    }

    [TestCase(3, 4, 32, false)]
    [TestCase(2, 1, 32, true)]
    [Category("Cuda")]
    public void CudaRotaryEmbeddingMatchesCpu(int t, int heads, int half, bool inPlace)
    {
        var cuda = CudaTestBackends.Get();
        var rope = new YarnRope(2 * half, 10000, YarnScaling.DeepSeekV3);
        int maxPos = 20;
        var cos = new float[maxPos * half];
        var sin = new float[maxPos * half];
        for (int p = 0; p < maxPos; p++) rope.CosSin(p, cos.AsSpan(p * half, half), sin.AsSpan(p * half, half));
        var x = Gaussian(t * heads * (2 * half + 3), new Random(t * 5 + heads));
        int[] positions = Enumerable.Range(0, t).Select(i => (i * 7 + 11) % maxPos).ToArray();
        var cpu = RunRope(Cpu, x, positions, cos, sin, t, heads, half, inPlace);
        var gpu = RunRope(cuda, x, positions, cos, sin, t, heads, half, inPlace);
        // Same FP32 products and sums, each rounded separately on both sides: bit-identical.
        Assert.That(gpu, Is.EqualTo(cpu));
    }

    [Test]
    [Category("Cuda")]
    public void CudaElementwiseMatchesCpu()
    {
        var cuda = CudaTestBackends.Get();
        int rows = 3, cols = 300;
        var rng = new Random(4);
        var a = Gaussian(rows * cols, rng);
        var b = Gaussian(rows * cols, rng);
        Assert.That(RunAddAndCopy(cuda, a, b, rows, cols), Is.EqualTo(RunAddAndCopy(Cpu, a, b, rows, cols)));
    }
}
