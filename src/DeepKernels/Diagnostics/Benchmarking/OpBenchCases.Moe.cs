using DeepKernels.Backends;
using DeepKernels.Ops.MoeLayer;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>
/// MoE cases (issue 5) at DeepSeek-V3 widths (hidden 7168, expert width 2048, top-8, one shared
/// expert): the whole layer at T in {1, 16, 128, 4096} (256 experts on CUDA; 16 on the CPU so the
/// weights fit, T = 4096 there behind --full), the permutation (layout + gather with the FP8
/// quantization fused) and the combine.
/// </summary>
internal static class MoeBenchCases
{
    private const int Hidden = 7168, Intermediate = 2048, TopK = 8, CpuExperts = 16, GpuExperts = 256;

    public static void Add(List<OpBenchCase> cases)
    {
        foreach (int t in new[] { 1, 16, 128, 4096 })
        {
            cases.Add(Layer(GpuExperts, t, BenchTargets.Cuda, ""));
            cases.Add(Layer(CpuExperts, t, BenchTargets.Cpu, " cpu") with { FullGridOnly = t > 128 });
        }
        foreach (int t in new[] { 1, 128, 4096 })
        {
            cases.Add(Permute(t));
            cases.Add(Combine(t));
        }
    }

    /// <summary>Each token picks <paramref name="topK"/> distinct experts (partial Fisher-Yates, seeded).</summary>
    internal static int[] Routing(int tokens, int topK, int experts, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[tokens * topK];
        var pool = Enumerable.Range(0, experts).ToArray();
        for (int t = 0; t < tokens; t++)
        {
            for (int j = 0; j < topK; j++)
            {
                int pick = rng.Next(j, experts);
                (pool[j], pool[pick]) = (pool[pick], pool[j]);
                ids[t * topK + j] = pool[j];
            }
        }
        return ids;
    }

    private static OpBenchCase Layer(int experts, int tokens, BenchTargets targets, string suffix)
    {
        var config = new MoeLayerConfig { Hidden = Hidden, Intermediate = Intermediate, NumExperts = experts, TopK = TopK, SharedIntermediate = Intermediate };
        int[] ids = Routing(tokens, TopK, experts, 7);
        int active = ids.Distinct().Count();
        // Compulsory traffic: the FP8 weights (and block scales) of every expert in use plus the
        // shared expert, x read and the output written (FP32).
        double bytes = MoeFeedForward.WeightBytes(config, active) + 2.0 * tokens * Hidden * 4;
        return new OpBenchCase("moe-layer", $"moe-layer T={tokens} E={experts} k={TopK} H={Hidden} I={Intermediate}{suffix}",
            new Dictionary<string, long> { ["T"] = tokens, ["E"] = experts, ["k"] = TopK, ["H"] = Hidden, ["I"] = Intermediate, ["activeExperts"] = active },
            MoeFeedForward.Flops(config, tokens), bytes, MathPrecision.Fp8, targets,
            backend => BenchOwned.Build(owned =>
            {
                int h = Hidden, i = Intermediate;
                var gateUp = owned.Keep(GemmBenchCases.Fp8Tensor(backend, 41, experts, 2 * i, h));
                var gateUpScales = owned.Keep(GemmBenchCases.Scales(backend, experts, 2 * i / 128, h / 128));
                var down = owned.Keep(GemmBenchCases.Fp8Tensor(backend, 42, experts, h, i));
                var downScales = owned.Keep(GemmBenchCases.Scales(backend, experts, h / 128, i / 128));
                var sharedGateUp = owned.Keep(GemmBenchCases.Fp8Tensor(backend, 43, 2 * i, h));
                var sharedGateUpScales = owned.Keep(GemmBenchCases.Scales(backend, 2 * i / 128, h / 128));
                var sharedDown = owned.Keep(GemmBenchCases.Fp8Tensor(backend, 44, h, i));
                var sharedDownScales = owned.Keep(GemmBenchCases.Scales(backend, h / 128, i / 128));
                var weights = new MoeLayerWeights(config, gateUp.View, gateUpScales.View, down.View, downScales.View,
                    sharedGateUp.View, sharedGateUpScales.View, sharedDown.View, sharedDownScales.View);
                var x = owned.Keep(backend.Upload<float>(OpBenchRegistry.RandomActivations(tokens * h, 45), DType.Float32, tokens, h));
                var idsT = owned.Keep(backend.Upload<int>(ids, DType.Int32, tokens, TopK));
                var w = owned.Keep(backend.Upload<float>(Enumerable.Repeat(1f / TopK, tokens * TopK).ToArray(), DType.Float32, tokens, TopK));
                var output = owned.Keep(backend.Allocate(DType.Float32, tokens, h));
                var workspace = owned.Keep(MoeWorkspace.Create(backend, config, tokens));
                return () => MoeFeedForward.Forward(backend, weights, x, idsT, w, workspace, output);
            }));
    }

    // Layout (expert offsets, m_indices, row map, inverse) and the gather with FP8 quantization
    // fused, E = 256, alignment 128. Bytes: ids read, x read once (FP32), the FP8 rows and their
    // scales written, the four index arrays written. FLOPs: 2 per quantized value (as act-quant).
    private static OpBenchCase Permute(int tokens)
    {
        int capacity = MoePermutation.ContiguousCapacity(tokens, TopK, GpuExperts);
        int groups = ActivationQuantization.GroupCount(Hidden);
        long routed = (long)tokens * TopK;
        double bytes = routed * 4.0 + (double)tokens * Hidden * 4 + routed * (Hidden + groups * 4.0)
            + (GpuExperts + 1) * 4.0 + 2.0 * capacity * 4 + routed * 4.0;
        int[] ids = Routing(tokens, TopK, GpuExperts, 11);
        return new OpBenchCase("moe-permute", $"moe-permute T={tokens} E={GpuExperts} k={TopK} H={Hidden}",
            new Dictionary<string, long> { ["T"] = tokens, ["E"] = GpuExperts, ["k"] = TopK, ["H"] = Hidden, ["capacity"] = capacity },
            2.0 * routed * Hidden, bytes, MathPrecision.Fp32, BenchTargets.All,
            backend => BenchOwned.Build(owned =>
            {
                var idsT = owned.Keep(backend.Upload<int>(ids, DType.Int32, tokens, TopK));
                var offsets = owned.Keep(backend.Allocate(DType.Int32, GpuExperts + 1));
                var mIndices = owned.Keep(backend.Allocate(DType.Int32, capacity));
                var rowTokens = owned.Keep(backend.Allocate(DType.Int32, capacity));
                var inverse = owned.Keep(backend.Allocate(DType.Int32, tokens, TopK));
                var x = owned.Keep(backend.Upload<float>(OpBenchRegistry.RandomActivations(tokens * Hidden, 12), DType.Float32, tokens, Hidden));
                var rows = owned.Keep(backend.Allocate(DType.Float8E4M3, capacity, Hidden));
                var scales = owned.Keep(backend.Allocate(DType.Float32, capacity, groups));
                return () =>
                {
                    MoePermutation.BuildContiguous(backend, idsT, GpuExperts, MoePermutation.DefaultAlignment, offsets, mIndices, rowTokens, inverse);
                    MoePermutation.Gather(backend, x, inverse, rows, scales);
                };
            }));
    }

    // Weighted scatter back to tokens plus the shared expert: expert rows BF16 [T*k, H] (the
    // grouped GEMM's output), weights FP32, shared and output FP32 [T, H]. FLOPs: a multiply-add
    // per routed value and the shared add.
    private static OpBenchCase Combine(int tokens)
    {
        long routed = (long)tokens * TopK;
        double bytes = routed * Hidden * 2.0 + routed * 8.0 + 2.0 * tokens * Hidden * 4;
        return new OpBenchCase("moe-combine", $"moe-combine T={tokens} k={TopK} H={Hidden}",
            new Dictionary<string, long> { ["T"] = tokens, ["k"] = TopK, ["H"] = Hidden },
            2.0 * routed * Hidden + (double)tokens * Hidden, bytes, MathPrecision.Fp32, BenchTargets.All,
            backend => BenchOwned.Build(owned =>
            {
                // Row r = t * k + j holds slot j of token t (what a contiguous layout with alignment 1 gives).
                var inverseHost = Enumerable.Range(0, (int)routed).ToArray();
                var expertOut = owned.Keep(backend.Allocate(DType.BFloat16, routed, Hidden));
                BenchFill.Upload(backend, expertOut, 13, BenchFill.FixBFloat16);
                var inverse = owned.Keep(backend.Upload<int>(inverseHost, DType.Int32, tokens, TopK));
                var w = owned.Keep(backend.Upload<float>(Enumerable.Repeat(1f / TopK, (int)routed).ToArray(), DType.Float32, tokens, TopK));
                var shared = owned.Keep(backend.Upload<float>(OpBenchRegistry.RandomActivations(tokens * Hidden, 14), DType.Float32, tokens, Hidden));
                var output = owned.Keep(backend.Allocate(DType.Float32, tokens, Hidden));
                return () => MoePermutation.Combine(backend, expertOut, inverse, w, shared, output);
            }));
    }
}

/// <summary>Collects what a case's setup allocates so a failure half-way releases it, and the run owns it afterwards.</summary>
internal sealed class BenchOwned
{
    private readonly List<IDisposable> _owned = [];

    /// <summary>Remembers <paramref name="item"/> for disposal and returns it.</summary>
    public T Keep<T>(T item) where T : IDisposable
    {
        _owned.Add(item);
        return item;
    }

    /// <summary>Runs <paramref name="setup"/>; its returned body becomes the instance, which disposes everything kept (in reverse order).</summary>
    public static IOpBenchInstance Build(Func<BenchOwned, Action> setup)
    {
        var owned = new BenchOwned();
        try
        {
            Action run = setup(owned);
            owned._owned.Reverse();
            return new DelegateBenchInstance(run, [.. owned._owned]);
        }
        catch
        {
            for (int i = owned._owned.Count - 1; i >= 0; i--) owned._owned[i].Dispose();
            throw;
        }
    }
}
