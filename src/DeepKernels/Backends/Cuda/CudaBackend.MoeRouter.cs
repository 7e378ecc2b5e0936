using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.MoeRouter;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IMoeRouterBackend
{
    /// <summary>
    /// The router: <c>dk_moe_router(logits, logits_bf16, bias, has_bias, ids, weights, tokens,
    /// experts, n_group, topk_group, top_k, scoring, group_score_max, norm_topk_prob,
    /// routed_scaling_factor)</c> (native/kernels/moe_router.cu), one warp per token.
    /// </summary>
    internal const string MoeRouterKernel = "dk_moe_router";

    void IMoeRouterBackend.Route(in MoeRouterArgs args)
    {
        var config = args.Config;
        var groupScore = config.EffectiveGroupScore(args.Bias is not null);
        const int tokensPerCta = 4;
        LaunchKernel(MoeRouterKernel, new Dim3((uint)((args.Tokens + tokensPerCta - 1) / tokensPerCta)), new Dim3(32 * tokensPerCta), 0,
            KernelArg.Pointer(args.Logits),
            args.Logits.DType == DType.BFloat16 ? 1 : 0,
            KernelArg.Pointer(args.Bias is TensorView bias ? bias.Data : 0),
            args.Bias is null ? 0 : 1,
            KernelArg.Pointer(args.ExpertIds),
            KernelArg.Pointer(args.Weights),
            args.Tokens, args.Experts, config.NGroup, config.TopKGroup, config.TopK,
            config.Scoring == MoeScoring.Softmax ? 1 : 0,
            groupScore == MoeGroupScore.Max ? 1 : 0,
            config.NormTopKProb ? 1 : 0,
            config.RoutedScalingFactor);
    }
}
