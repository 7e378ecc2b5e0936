using BenchmarkDotNet.Attributes;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Bench.Infrastructure;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Tensors;

namespace DeepKernels.Bench;

/// <summary>Shared setup for the MoE suites: deterministic FP8 weights and routings.</summary>
internal static class MoeBenchData
{
    /// <summary>Random E4M3 codes in [-2, 2] (no NaN) and block scales around 1e-3.</summary>
    public static TensorBuffer Codes(Backend backend, int seed, params long[] shape)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var codes = new byte[count];
        new Random(seed).NextBytes(codes);
        for (long i = 0; i < count; i++) codes[i] = (byte)(codes[i] & 0xBF); // clear the top exponent bit: |x| < 2, never NaN
        return backend.Upload<byte>(codes, DType.Float8E4M3, shape);
    }

    public static TensorBuffer Scales(Backend backend, int seed, params long[] shape)
    {
        var rng = new Random(seed);
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var s = new float[count];
        for (long i = 0; i < count; i++) s[i] = (float)(1e-3 * (0.5 + rng.NextDouble()));
        return backend.Upload<float>(s, DType.Float32, shape);
    }

    public static int[] Routing(int tokens, int topK, int experts, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[tokens * topK];
        for (int t = 0; t < tokens; t++)
        {
            var chosen = Enumerable.Range(0, experts).OrderBy(_ => rng.Next()).Take(topK).ToArray();
            chosen.CopyTo(ids, t * topK);
        }
        return ids;
    }
}

/// <summary>
/// Grouped FP8 GEMM on the CPU backend at DeepSeek-V3 expert shapes (gate_up: N = 4096,
/// K = 7168; down: N = 7168, K = 2048), with row counts scaled for a CPU: contiguous layouts of
/// G groups x M rows and masked layouts of G groups x expected_m rows. BF16 output, so bytes
/// follow DESIGN.md: rows*K + G*N*K + 2*rows*N. <see cref="DenseBaseline"/> runs the dense FP8
/// GEMM with the same total rows against one expert's weights (same FLOPs): the CPU
/// target is grouped >= 70% of that throughput.
/// </summary>
public class MoeGroupedGemmBenchmarks : IThroughputBenchmark
{
    private Backend _backend = null!;
    private readonly List<TensorBuffer> _buffers = [];
    private TensorView _a, _aScales, _index, _b, _bScales, _d, _denseA, _denseAScales, _denseD;

    /// <summary>Layout, groups and rows per group: c = contiguous, m = masked (G x expected_m).</summary>
    [Params("c4x256", "c8x128", "m1x64", "m4x16", "m16x4")]
    public string Case { get; set; } = "c4x256";

    /// <summary>Which expert projection.</summary>
    [Params("gate_up", "down")]
    public string Projection { get; set; } = "gate_up";

    private bool Masked => Case[0] == 'm';
    private int Groups => int.Parse(Case[1..Case.IndexOf('x', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture);
    private int RowsPerGroup => int.Parse(Case[(Case.IndexOf('x', StringComparison.Ordinal) + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    private int N => Projection == "gate_up" ? 4096 : 7168;
    private int K => Projection == "gate_up" ? 7168 : 2048;

    /// <inheritdoc />
    public double Flops => GroupedFp8Gemm.Flops((long)Groups * RowsPerGroup, N, K);

    /// <inheritdoc />
    public double Bytes => (double)Groups * RowsPerGroup * K + (double)Groups * N * K + 2.0 * Groups * RowsPerGroup * N;

    /// <summary>Allocates weights and activations once per case.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend();
        int g = Groups, m = RowsPerGroup, n = N, k = K, kb = (k + 127) / 128, nb = (n + 127) / 128;
        TensorView Keep(TensorBuffer b) { _buffers.Add(b); return b.View; }
        _b = Keep(MoeBenchData.Codes(_backend, 1, g, n, k));
        _bScales = Keep(MoeBenchData.Scales(_backend, 2, g, nb, kb));
        if (Masked)
        {
            int mMax = m * 2; // slack as a CUDA-graph layout would have
            _a = Keep(MoeBenchData.Codes(_backend, 3, g, mMax, k));
            _aScales = Keep(MoeBenchData.Scales(_backend, 4, g, mMax, kb));
            _index = Keep(_backend.Upload<int>(Enumerable.Repeat(m, g).ToArray(), DType.Int32, g));
            _d = Keep(_backend.Allocate(DType.BFloat16, g, mMax, n));
        }
        else
        {
            _a = Keep(MoeBenchData.Codes(_backend, 3, (long)g * m, k));
            _aScales = Keep(MoeBenchData.Scales(_backend, 4, (long)g * m, kb));
            _index = Keep(_backend.Upload<int>(Enumerable.Range(0, g * m).Select(r => r / m).ToArray(), DType.Int32, g * m));
            _d = Keep(_backend.Allocate(DType.BFloat16, (long)g * m, n));
        }
        _denseA = Keep(MoeBenchData.Codes(_backend, 5, (long)g * m, k));
        _denseAScales = Keep(MoeBenchData.Scales(_backend, 6, (long)g * m, kb));
        _denseD = Keep(_backend.Allocate(DType.BFloat16, (long)g * m, n));
    }

    /// <summary>One grouped GEMM.</summary>
    [Benchmark]
    public void GroupedGemm()
    {
        if (Masked) GroupedFp8Gemm.Masked(_backend, _a, _aScales, _index, _b, _bScales, _d, RowsPerGroup);
        else GroupedFp8Gemm.Contiguous(_backend, _a, _aScales, _index, _b, _bScales, _d);
    }

    /// <summary>The dense FP8 GEMM over the same number of rows with expert 0's weights.</summary>
    [Benchmark(Baseline = true)]
    public void DenseBaseline() =>
        Fp8Gemm.Run(_backend, _denseA, _denseAScales, _b.SliceRows(0, 1).Reshape(N, K), _bScales.SliceRows(0, 1).Reshape(_bScales.Dim(1), _bScales.Dim(2)), _denseD);

    /// <summary>Releases the tensors.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var b in _buffers) b.Dispose();
        _buffers.Clear();
        _backend.Dispose();
    }
}

/// <summary>
/// The whole MoE layer (<see cref="MoeFeedForward"/>) on the CPU backend at DeepSeek-V3 widths
/// (hidden 7168, expert width 2048, top-8, one shared expert of width 2048) with 16 routed
/// experts so the weights fit in memory. Bytes: the FP8 weights of the experts in use plus the
/// activations in and out (FP32).
/// </summary>
public class MoeLayerBenchmarks : IThroughputBenchmark
{
    private const int Experts = 16;
    private Backend _backend = null!;
    private readonly List<TensorBuffer> _buffers = [];
    private MoeLayerWeights _weights = null!;
    private MoeWorkspace _workspace = null!;
    private TensorView _x, _ids, _w, _out;

    /// <summary>Tokens per call (issue 5's T; 4096 takes tens of seconds per call on a small CPU).</summary>
    [Params(1, 16, 128, 4096)]
    public int Tokens { get; set; } = 1;

    /// <summary>The layer shape.</summary>
    public static MoeLayerConfig Config { get; } = new() { Hidden = 7168, Intermediate = 2048, NumExperts = Experts, TopK = 8, SharedIntermediate = 2048 };

    /// <inheritdoc />
    public double Flops => MoeFeedForward.Flops(Config, Tokens);

    /// <inheritdoc />
    public double Bytes => MoeFeedForward.WeightBytes(Config, ActiveExperts) + 2.0 * Tokens * Config.Hidden * 4;

    private int ActiveExperts => MoeBenchData.Routing(Tokens, Config.TopK, Experts, 7).Distinct().Count();

    /// <summary>Allocates weights, routing and the workspace once per case.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend();
        var c = Config;
        int h = c.Hidden, i = c.Intermediate, s = c.SharedIntermediate;
        TensorView Keep(TensorBuffer b) { _buffers.Add(b); return b.View; }
        _weights = new MoeLayerWeights(c,
            Keep(MoeBenchData.Codes(_backend, 1, Experts, 2 * i, h)), Keep(MoeBenchData.Scales(_backend, 2, Experts, 2 * i / 128, h / 128)),
            Keep(MoeBenchData.Codes(_backend, 3, Experts, h, i)), Keep(MoeBenchData.Scales(_backend, 4, Experts, h / 128, i / 128)),
            Keep(MoeBenchData.Codes(_backend, 5, 2 * s, h)), Keep(MoeBenchData.Scales(_backend, 6, 2 * s / 128, h / 128)),
            Keep(MoeBenchData.Codes(_backend, 7, h, s)), Keep(MoeBenchData.Scales(_backend, 8, h / 128, s / 128)));
        var rng = new Random(9);
        _x = Keep(_backend.Upload<float>(Enumerable.Range(0, Tokens * h).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), DType.Float32, Tokens, h));
        _ids = Keep(_backend.Upload<int>(MoeBenchData.Routing(Tokens, c.TopK, Experts, 7), DType.Int32, Tokens, c.TopK));
        _w = Keep(_backend.Upload<float>(Enumerable.Repeat(1f / c.TopK, Tokens * c.TopK).ToArray(), DType.Float32, Tokens, c.TopK));
        _out = Keep(_backend.Allocate(DType.Float32, Tokens, h));
        _workspace = MoeWorkspace.Create(_backend, c, Tokens);
    }

    /// <summary>One layer forward.</summary>
    [Benchmark]
    public void Forward() => MoeFeedForward.Forward(_backend, _weights, _x, _ids, _w, _workspace, _out);

    /// <summary>Releases the tensors.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _workspace.Dispose();
        foreach (var b in _buffers) b.Dispose();
        _buffers.Clear();
        _backend.Dispose();
    }
}
