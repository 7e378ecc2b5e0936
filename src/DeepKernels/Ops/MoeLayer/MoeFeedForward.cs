using DeepKernels.Backends;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MoeLayer;

/// <summary>
/// The DeepSeek MoE feed-forward layer in one call, for tokens already routed (see
/// <see cref="MoeRouter.MoeRouting"/>):
/// <code>
/// xq         = FP8(x) per 1x128 group                      (once per token)
/// rows       = gather xq by expert (contiguous layout)
/// gu         = grouped FP8 GEMM(rows, GateUp[e])            [R, 2I]
/// h          = FP8(SiLU(gu[:, :I]) * gu[:, I:]) per 1x128 group
/// y          = grouped FP8 GEMM(h, Down[e])                 [R, H]
/// out[t]     = sum_j w[t,j] * y[row(t,j)] + shared(x[t])
/// shared(x)  = Down_s(FP8(SiLU(gate_s(xq)) * up_s(xq)))      (dense FP8 MLP, same steps)
/// </code>
/// Accumulation is FP32 throughout (per-128-K promotion in the GEMMs); expert ids of -1 are
/// dropped slots. All temporaries live in a <see cref="MoeWorkspace"/>.
/// </summary>
public static class MoeFeedForward
{
    /// <summary>
    /// Runs the layer: <paramref name="x"/> [T, H] Float32 or BFloat16,
    /// <paramref name="expertIds"/> Int32 [T, k] in [-1, E), <paramref name="routingWeights"/>
    /// Float32 [T, k], <paramref name="output"/> [T, H] Float32 or BFloat16, T &lt;= the
    /// workspace's MaxTokens. Host-resident ids are checked before anything runs. On the CUDA
    /// backend, device-resident ids never go to the host (no copy, no synchronization): an id
    /// outside [-1, E) is dropped by the kernels and reported by
    /// <c>CudaBackend.ThrowIfDeviceRoutingError</c>, or at once with <c>CudaBackend.ValidateDeviceRouting</c>.
    /// </summary>
    public static void Forward(Backend backend, MoeLayerWeights weights, TensorView x, TensorView expertIds, TensorView routingWeights, MoeWorkspace workspace, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(workspace);
        ObjectDisposedException.ThrowIf(workspace.IsDisposed, workspace);
        var config = weights.Config;
        if (!ReferenceEquals(workspace.Backend, backend))
            throw new ArgumentException($"Expected a workspace allocated on backend '{backend.Name}', got one on '{workspace.Backend.Name}'.", nameof(workspace));
        if (workspace.Config != config)
            throw new ArgumentException($"Expected a workspace for {config}, got one for {workspace.Config}.", nameof(workspace));
        Guard.Rank(x, 2, nameof(x));
        Guard.DType(x, DType.Float32, DType.BFloat16, nameof(x));
        long t = x.Dim(0);
        Guard.Positive(t, "T");
        if (t > workspace.MaxTokens)
            throw new ArgumentException($"Expected at most {workspace.MaxTokens} tokens (the workspace's MaxTokens), got x {x}.", nameof(x));
        Guard.Shape(x, nameof(x), t, config.Hidden);
        Guard.DType(expertIds, DType.Int32, nameof(expertIds));
        Guard.Shape(expertIds, nameof(expertIds), t, config.TopK);
        Guard.DType(routingWeights, DType.Float32, nameof(routingWeights));
        Guard.Shape(routingWeights, nameof(routingWeights), t, config.TopK);
        Guard.DType(output, DType.Float32, DType.BFloat16, nameof(output));
        Guard.Shape(output, nameof(output), t, config.Hidden);
        foreach (var (view, name) in new[] { (x, nameof(x)), (expertIds, nameof(expertIds)), (routingWeights, nameof(routingWeights)), (output, nameof(output)), (weights.GateUp, nameof(weights.GateUp)), (weights.Down, nameof(weights.Down)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        if (weights.SharedGateUp is TensorView sgu) Guard.OnBackend(sgu, backend, nameof(weights.SharedGateUp));
        if (expertIds.Location == MemoryLocation.Host)
            MoePermutationCore.CheckExpertIds(expertIds.AsSpan<int>(), config.TopK, config.NumExperts, nameof(expertIds));
        var impl = Guard.Implementation<IMoeLayerBackend>(backend, "the MoE layer");
        impl.MoeForward(new MoeLayerArgs(weights, x, (int)t, expertIds, routingWeights, workspace, output));
    }

    /// <summary>
    /// Routes and runs the layer in one call: the gate (<see cref="MoeRouter.MoeRouting"/>) turns
    /// <paramref name="logits"/> [T, E] (Float32/BFloat16, plus the optional FP32
    /// <paramref name="bias"/> [E]) into ids and weights held in the workspace, then
    /// <see cref="Forward(Backend, MoeLayerWeights, TensorView, TensorView, TensorView, MoeWorkspace, TensorView)"/> runs.
    /// The router's TopK and expert count must match the layer's.
    /// </summary>
    public static void Forward(Backend backend, MoeLayerWeights weights, MoeRouter.MoeRouterConfig router, TensorView logits, TensorView? bias, TensorView x, MoeWorkspace workspace, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(router);
        ArgumentNullException.ThrowIfNull(workspace);
        ObjectDisposedException.ThrowIf(workspace.IsDisposed, workspace);
        var config = weights.Config;
        if (router.TopK != config.TopK)
            throw new ArgumentException($"Expected the router's TopK to equal the layer's {config.TopK}, got {router.TopK}.", nameof(router));
        Guard.Rank(logits, 2, nameof(logits));
        if (logits.Dim(1) != config.NumExperts)
            throw new ArgumentException($"Expected logits of shape [T, {config.NumExperts}], got {logits}.", nameof(logits));
        long t = logits.Dim(0);
        if (t < 1 || t > workspace.MaxTokens)
            throw new ArgumentException($"Expected 1..{workspace.MaxTokens} tokens (the workspace's MaxTokens), got logits {logits}.", nameof(logits));
        var ids = workspace.RoutedIds.SliceRows(0, t);
        var routed = workspace.RoutedWeights.SliceRows(0, t);
        MoeRouter.MoeRouting.Route(backend, logits, bias, router, ids, routed);
        Forward(backend, weights, x, ids, routed, workspace, output);
    }

    /// <summary>Floating-point operations of one call: routed and shared GEMMs, 2 flops per multiply-add.</summary>
    public static double Flops(MoeLayerConfig config, int tokens)
    {
        ArgumentNullException.ThrowIfNull(config);
        double perRow = 2.0 * config.Hidden * (2.0 * config.Intermediate) + 2.0 * config.Intermediate * config.Hidden;
        double sharedPerRow = 3.0 * 2.0 * config.Hidden * config.SharedIntermediate;
        return tokens * (config.TopK * perRow + sharedPerRow);
    }

    /// <summary>
    /// FP8 weight bytes one call must read: every expert some token uses (at most min(E, T*k))
    /// plus the shared expert, with their FP32 block scales.
    /// </summary>
    public static double WeightBytes(MoeLayerConfig config, int activeExperts)
    {
        ArgumentNullException.ThrowIfNull(config);
        double expert = 3.0 * config.Hidden * config.Intermediate * (1 + 4.0 / (128 * 128));
        double shared = 3.0 * config.Hidden * config.SharedIntermediate * (1 + 4.0 / (128 * 128));
        return activeExperts * expert + shared;
    }
}

internal readonly record struct MoeLayerArgs(MoeLayerWeights Weights, TensorView X, int Tokens, TensorView ExpertIds, TensorView RoutingWeights, MoeWorkspace Workspace, TensorView Output);

/// <summary>A backend's implementation of the fused MoE layer.</summary>
internal interface IMoeLayerBackend
{
    void MoeForward(in MoeLayerArgs args);
}
