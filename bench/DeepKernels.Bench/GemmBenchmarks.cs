using BenchmarkDotNet.Attributes;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Bench;

/// <summary>One GEMM shape: D[M, N] = A[M, K] * B[N, K]^T.</summary>
public readonly record struct GemmShape(int M, int N, int K)
{
    /// <summary>2 * M * N * K.</summary>
    public double Flops => Fp8Gemm.Flops(M, N, K);

    /// <summary>The project's byte anchor: M*K + K*N + 2*M*N.</summary>
    public double Bytes => Fp8Gemm.Bytes(M, N, K);

    /// <summary>GFLOP/s for a measured time in nanoseconds.</summary>
    public double GflopsPerSecond(double nanoseconds) => Flops / nanoseconds;

    /// <summary>GB/s for a measured time in nanoseconds.</summary>
    public double GigabytesPerSecond(double nanoseconds) => Bytes / nanoseconds;

    /// <inheritdoc />
    public override string ToString() => $"{M}x{N}x{K}";
}

/// <summary>
/// CPU FP8 block-scaled GEMM over M in {1, 4, 16, 64, 128, 512} and the DeepSeek-V3 (N, K) pairs,
/// plus M = 4096 on a narrower N (the full shapes take seconds per call on a small CPU). Inputs
/// are quantized Gaussian data, as real weights and activations are. Work per call is exposed
/// through <see cref="Shape"/> (<see cref="GemmShape.Flops"/>, <see cref="GemmShape.Bytes"/>) so
/// columns can report GFLOP/s and GB/s; decode shapes (M &lt;= 16) compare with memory copy
/// bandwidth, prefill shapes (M &gt;= 512) with FMA peak.
/// </summary>
[SimpleJob(launchCount: 1, warmupCount: 2, iterationCount: 5)]
[BenchmarkCategory("Gemm", "Cpu")]
public class GemmBenchmarks
{
    /// <summary>DeepSeek-V3 projection shapes (N, K).</summary>
    public static readonly (int N, int K)[] DeepSeekV3Shapes = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)];

    /// <summary>The M values of the suite.</summary>
    public static readonly int[] MValues = [1, 4, 16, 64, 128, 512];

    /// <summary>Every shape benchmarked.</summary>
    public static IEnumerable<GemmShape> Shapes()
    {
        foreach (var (n, k) in DeepSeekV3Shapes)
            foreach (int m in MValues)
                yield return new GemmShape(m, n, k);
        yield return new GemmShape(4096, 512, 7168);
    }

    /// <summary>The shape of this case.</summary>
    [ParamsSource(nameof(Shapes))]
    public GemmShape Shape { get; set; }

    private Backend _backend = null!;
    private TensorBuffer _a = null!, _sa = null!, _b = null!, _sb = null!, _d = null!;

    /// <summary>Quantizes random Gaussian inputs once.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend();
        var (m, n, k) = (Shape.M, Shape.N, Shape.K);
        using (var x = _backend.Allocate(DType.Float32, m, k))
        {
            FillGaussian(x.View.AsSpan<float>(), 1);
            _a = _backend.Allocate(DType.Float8E4M3, m, k);
            _sa = _backend.Allocate(DType.Float32, m, ActivationQuantization.GroupCount(k));
            ActivationQuantization.Quantize(_backend, x, _a, _sa);
        }
        _b = _backend.Allocate(DType.Float8E4M3, n, k);
        _sb = _backend.Allocate(DType.Float32, WeightQuantization.BlockCount(n), WeightQuantization.BlockCount(k));
        // Quantize B in row bands so the FP32 staging buffer stays small.
        const int Band = 1024;
        using (var w = _backend.Allocate(DType.Float32, Band, k))
        {
            for (int r0 = 0; r0 < n; r0 += Band)
            {
                int rows = Math.Min(Band, n - r0);
                var band = w.View.AsSpan<float>()[..(rows * k)];
                FillGaussian(band, 2 + r0);
                var input = new TensorView(w.View.Data, DType.Float32, MemoryLocation.Host, rows, k);
                var sbRows = _sb.View.SliceRows(r0 / 128, WeightQuantization.BlockCount(rows));
                WeightQuantization.Quantize(_backend, input, _b.View.SliceRows(r0, rows), sbRows);
            }
        }
        _d = _backend.Allocate(DType.BFloat16, m, n);
    }

    private static void FillGaussian(Span<float> values, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < values.Length; i += 2)
        {
            // Box-Muller: two normals per pair of uniforms.
            double u = 1 - rng.NextDouble(), v = rng.NextDouble();
            double r = Math.Sqrt(-2 * Math.Log(u));
            values[i] = (float)(r * Math.Cos(2 * Math.PI * v));
            if (i + 1 < values.Length) values[i + 1] = (float)(r * Math.Sin(2 * Math.PI * v));
        }
    }

    /// <summary>D (BF16) = A * B^T.</summary>
    [Benchmark]
    public void Fp8GemmBf16() => Fp8Gemm.Run(_backend, _a, _sa, _b, _sb, _d);

    /// <summary>Frees the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _a, _sa, _b, _sb, _d }) t?.Dispose();
        _backend.Dispose();
    }
}
