using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MoeLayer;

/// <summary>
/// FP8 weights of one MoE layer, as views (the caller owns the memory). Checked once here:
/// dtypes, shapes against the config, and (for host memory) that every scale is finite and
/// positive, so that each forward call only checks that the views still match.
/// <list type="bullet">
/// <item>GateUp [E, 2*I, H] E4M3: rows [0, I) are gate_proj, [I, 2I) up_proj; scales [E, ceil(2I/128), ceil(H/128)] FP32.</item>
/// <item>Down [E, H, I] E4M3; scales [E, ceil(H/128), ceil(I/128)] FP32.</item>
/// <item>Shared expert (when the config has one): SharedGateUp [2*Is, H], SharedDown [H, Is], with 2-D block scales.</item>
/// </list>
/// </summary>
public sealed class MoeLayerWeights
{
    /// <summary>Validates and wraps the views.</summary>
    public MoeLayerWeights(MoeLayerConfig config, TensorView gateUp, TensorView gateUpScales, TensorView down, TensorView downScales,
        TensorView? sharedGateUp = null, TensorView? sharedGateUpScales = null, TensorView? sharedDown = null, TensorView? sharedDownScales = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        int e = config.NumExperts, h = config.Hidden, i = config.Intermediate, s = config.SharedIntermediate;
        CheckWeight(gateUp, gateUpScales, nameof(gateUp), nameof(gateUpScales), e, 2L * i, h);
        CheckWeight(down, downScales, nameof(down), nameof(downScales), e, h, i);
        bool anyShared = sharedGateUp is not null || sharedGateUpScales is not null || sharedDown is not null || sharedDownScales is not null;
        if (s > 0)
        {
            if (sharedGateUp is not TensorView sgu || sharedGateUpScales is not TensorView sgus || sharedDown is not TensorView sd || sharedDownScales is not TensorView sds)
                throw new ArgumentException($"Expected all four shared expert tensors for {nameof(config.SharedIntermediate)} = {s}.", nameof(sharedGateUp));
            CheckWeight(Lift(sgu), Lift(sgus), nameof(sharedGateUp), nameof(sharedGateUpScales), 1, 2L * s, h);
            CheckWeight(Lift(sd), Lift(sds), nameof(sharedDown), nameof(sharedDownScales), 1, h, s);
            SharedGateUp = sgu;
            SharedGateUpScales = sgus;
            SharedDown = sd;
            SharedDownScales = sds;
        }
        else if (anyShared)
            throw new ArgumentException($"Expected no shared expert tensors when {nameof(config.SharedIntermediate)} = 0.", nameof(sharedGateUp));
        Config = config;
        GateUp = gateUp;
        GateUpScales = gateUpScales;
        Down = down;
        DownScales = downScales;
    }

    /// <summary>The config these weights were checked against.</summary>
    public MoeLayerConfig Config { get; }

    /// <summary>Fused gate and up projections [E, 2I, H].</summary>
    public TensorView GateUp { get; }

    /// <summary>Block scales of <see cref="GateUp"/>.</summary>
    public TensorView GateUpScales { get; }

    /// <summary>Down projections [E, H, I].</summary>
    public TensorView Down { get; }

    /// <summary>Block scales of <see cref="Down"/>.</summary>
    public TensorView DownScales { get; }

    /// <summary>Shared expert gate and up [2Is, H], or null.</summary>
    public TensorView? SharedGateUp { get; }

    /// <summary>Block scales of <see cref="SharedGateUp"/>.</summary>
    public TensorView? SharedGateUpScales { get; }

    /// <summary>Shared expert down [H, Is], or null.</summary>
    public TensorView? SharedDown { get; }

    /// <summary>Block scales of <see cref="SharedDown"/>.</summary>
    public TensorView? SharedDownScales { get; }

    /// <summary>A 2-D weight or scale tensor seen as one group.</summary>
    internal static TensorView Lift(TensorView view)
    {
        if (view.Rank != 2) throw new ArgumentException($"Expected a rank-2 shared expert tensor, got {view}.", nameof(view));
        return view.Reshape(1, view.Dim(0), view.Dim(1));
    }

    private static void CheckWeight(TensorView w, TensorView scales, string name, string scalesName, long groups, long n, long k)
    {
        Guard.DType(w, DType.Float8E4M3, name);
        Guard.Shape(w, name, groups, n, k);
        Guard.Contiguous(w, name);
        Guard.DType(scales, DType.Float32, scalesName);
        Guard.Shape(scales, scalesName, groups, GroupedFp8Gemm.KBlocks((int)n), GroupedFp8Gemm.KBlocks((int)k));
        Guard.Contiguous(scales, scalesName);
        if (w.Location != scales.Location)
            throw new ArgumentException($"Expected {name} and {scalesName} in the same memory, got {w} and {scales}.", scalesName);
        if (scales.Location == MemoryLocation.Host) Guard.AllFinitePositive(scales.AsSpan<float>(), scalesName);
    }
}
