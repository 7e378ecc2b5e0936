using DeepKernels.Ops.MoeRouter;
using DeepKernels.Tensors;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>MoE gate routing (issue 5): DeepSeek-V3's noaux_tc gate, E = 256, top-8 of 8 groups keeping 4, T tokens.</summary>
internal static class MoeRouterBenchCases
{
    public static void Add(List<OpBenchCase> cases)
    {
        var config = MoeRouterConfig.DeepSeekV3;
        const int experts = 256;
        foreach (int t in new[] { 1, 16, 128, 4096 })
        {
            int k = config.TopK;
            // Bytes: FP32 logits and bias read, int32 ids + FP32 weights written. FLOPs: ~4 per
            // logit (sigmoid's exp, add and divide, the bias add); selection is comparisons, not counted.
            double bytes = (double)t * experts * 4 + experts * 4 + (double)t * k * 8;
            cases.Add(new OpBenchCase("moe-router", $"moe-router T={t} E={experts} k={k}",
                new Dictionary<string, long> { ["T"] = t, ["E"] = experts, ["k"] = k }, 4.0 * t * experts, bytes,
                MathPrecision.Fp32, BenchTargets.All,
                backend =>
                {
                    var rng = new Random(23);
                    var logits = new float[t * experts];
                    for (int i = 0; i < logits.Length; i++) logits[i] = (float)(rng.NextDouble() * 8 - 4);
                    var bias = new float[experts];
                    for (int i = 0; i < experts; i++) bias[i] = (float)(rng.NextDouble() * 0.2 - 0.1);
                    var l = backend.Upload<float>(logits, DType.Float32, t, experts);
                    var b = backend.Upload<float>(bias, DType.Float32, experts);
                    var ids = backend.Allocate(DType.Int32, t, k);
                    var w = backend.Allocate(DType.Float32, t, k);
                    return new DelegateBenchInstance(() => MoeRouting.Route(backend, l, b.View, config, ids, w), l, b, ids, w);
                }));
        }
    }
}
