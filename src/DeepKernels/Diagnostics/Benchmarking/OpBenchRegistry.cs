using DeepKernels.Backends;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>
/// Every op benchmark case at the anchor shapes of its issue. <c>deepkernels bench</c> and the GPU
/// verification bundle run these; BenchmarkDotNet suites in bench/ cover the CPU side in depth.
/// </summary>
public static class OpBenchRegistry
{
    /// <summary>All cases, grouped by op in registration order.</summary>
    public static IReadOnlyList<OpBenchCase> All { get; } = Build();

    /// <summary>The distinct op names, in registration order.</summary>
    public static IReadOnlyList<string> Ops { get; } = All.Select(c => c.Op).Distinct(StringComparer.Ordinal).ToList();

    /// <summary>Cases of one op (case-insensitive name); empty when the op is unknown.</summary>
    public static IReadOnlyList<OpBenchCase> ForOp(string op) =>
        All.Where(c => string.Equals(c.Op, op, StringComparison.OrdinalIgnoreCase)).ToList();

    private static List<OpBenchCase> Build()
    {
        var cases = new List<OpBenchCase>();
        AddActivationQuantization(cases);
        QuantizationBenchCases.Add(cases);
        GemmBenchCases.Add(cases);
        MoeRouterBenchCases.Add(cases);
        MoeBenchCases.Add(cases);
        MlaBenchCases.Add(cases);
        ElementwiseBenchCases.Add(cases);
        return cases;
    }

    /// <summary>Deterministic inputs in [-1, 1) with a few large outliers, like real activations.</summary>
    internal static float[] RandomActivations(int count, int seed)
    {
        var rng = new Random(seed);
        var x = new float[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 997 == 0 ? 30f : 1f);
        return x;
    }

    // Activation quantization (issue 2): DeepSeek-V3 hidden size K = 7168, decode to prefill M.
    // Bytes: FP32 input read + FP8 output + FP32 scales written. FLOPs: 2 per element (amax, scale).
    private static void AddActivationQuantization(List<OpBenchCase> cases)
    {
        const int k = 7168;
        foreach (int m in new[] { 1, 128, 4096 })
        {
            int groups = ActivationQuantization.GroupCount(k);
            double bytes = (double)m * k * 4 + (double)m * k + (double)m * groups * 4;
            cases.Add(new OpBenchCase("act-quant", $"act-quant M={m} K={k}",
                new Dictionary<string, long> { ["M"] = m, ["K"] = k }, 2.0 * m * k, bytes,
                MathPrecision.Fp32, BenchTargets.All,
                backend => PrepareActivationQuantization(backend, m, k)));
        }
    }

    private static IOpBenchInstance PrepareActivationQuantization(Backend backend, int m, int k)
    {
        var input = backend.Upload<float>(RandomActivations(m * k, 1), DType.Float32, m, k);
        var output = backend.Allocate(DType.Float8E4M3, m, k);
        var scales = backend.Allocate(DType.Float32, m, ActivationQuantization.GroupCount(k));
        return new DelegateBenchInstance(() => ActivationQuantization.Quantize(backend, input, output, scales), input, output, scales);
    }
}
