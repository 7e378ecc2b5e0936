using DeepKernels.Formats;
using DeepKernels.Ops.MoeRouter;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IMoeRouterBackend
{
    void IMoeRouterBackend.Route(in MoeRouterArgs args)
    {
        var a = args;
        var groupScore = a.Config.EffectiveGroupScore(a.Bias is not null);
        // A token is ~E*k cheap operations: only fan out when there is enough of them.
        if (a.Tokens < 64 || MaxThreads == 1)
        {
            for (int t = 0; t < a.Tokens; t++) RouteOne(a, groupScore, t);
            return;
        }
        int chunk = Math.Max(16, a.Tokens / (MaxThreads * 4));
        int chunks = (a.Tokens + chunk - 1) / chunk;
        Parallel.For(0, chunks, ParallelOptions, c =>
        {
            int end = Math.Min(a.Tokens, (c + 1) * chunk);
            for (int t = c * chunk; t < end; t++) RouteOne(a, groupScore, t);
        });
    }

    private static void RouteOne(in MoeRouterArgs a, MoeGroupScore groupScore, int t)
    {
        int e = a.Experts, k = a.Config.TopK;
        ReadOnlySpan<float> bias = a.Bias is TensorView b ? b.AsSpan<float>() : default;
        var ids = a.ExpertIds.AsSpan<int>().Slice(t * k, k);
        var weights = a.Weights.AsSpan<float>().Slice(t * k, k);
        if (a.Logits.DType == DType.Float32)
        {
            MoeRouterCore.RouteToken(a.Logits.AsSpan<float>().Slice(t * e, e), bias, a.Config, groupScore, ids, weights);
            return;
        }
        Span<float> row = stackalloc float[e];
        var source = a.Logits.AsSpan<ushort>().Slice(t * e, e);
        for (int i = 0; i < e; i++) row[i] = BFloat16.ToSingle(source[i]);
        MoeRouterCore.RouteToken(row, bias, a.Config, groupScore, ids, weights);
    }
}
