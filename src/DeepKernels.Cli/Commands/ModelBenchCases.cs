using DeepKernels.Diagnostics.Benchmarking;
using DeepKernels.Model;
using DeepKernels.Model.Config;
using DeepKernels.Model.Presets;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `model-decode` bench cases (issue 7): one decode step of the built-in tiny DeepSeek-V3 model
/// for a batch of 1, 8 or 64 sequences, each holding a 4-token prompt; tokens/s = batch / step
/// time. They live in the CLI because the model library sits above DeepKernels (whose
/// <see cref="OpBenchRegistry"/> cannot see it). Bytes: the active weights one step reads
/// (FP8 projections, router, shared and top-k experts of each token, BF16 lm_head) plus the
/// latent cache read; FLOPs: 2 per active parameter per token.
/// </summary>
internal static class ModelBenchCases
{
    /// <summary>Sequences get a fresh 4-token prompt after this many decoded tokens, so the cache never fills.</summary>
    private const int MaxDecodedTokens = 256;

    /// <summary>The cases, CPU (the target) and CUDA (so the bundle's trace covers the model's glue kernels).</summary>
    public static IReadOnlyList<OpBenchCase> All { get; } =
        [.. new[] { 1, 8, 64 }.Select(b => Case(b, BenchTargets.Cpu, "")), Case(1, BenchTargets.Cuda, "")];

    private static OpBenchCase Case(int batch, BenchTargets targets, string suffix)
    {
        var c = TinyPreset.Config;
        double active = ActiveParameters(c);
        double bytes = active + (double)c.VocabSize * c.HiddenSize // lm_head is BF16: one more byte per weight
            + (double)batch * 4 * c.NumHiddenLayers * c.LatentCacheDim * 2;
        return new OpBenchCase("model-decode", $"model-decode tiny batch={batch}{suffix}",
            new Dictionary<string, long> { ["batch"] = batch, ["layers"] = c.NumHiddenLayers, ["hidden"] = c.HiddenSize },
            2.0 * active * batch, bytes, MathPrecision.Fp8, targets, backend => Prepare(backend, batch))
        {
            TokensPerRun = batch,
        };
    }

    /// <summary>Weights one token touches (FP8 projections, top-k and shared experts, router, lm_head), in parameters.</summary>
    internal static double ActiveParameters(DeepSeekV3Config c)
    {
        double h = c.HiddenSize, heads = c.NumAttentionHeads;
        double q = c.QLoraRank is { } ql ? ql * h + heads * c.QkHeadDim * ql : heads * c.QkHeadDim * h;
        double attention = q + c.LatentCacheDim * h + heads * (c.QkNopeHeadDim + c.VHeadDim) * c.KvLoraRank + h * heads * c.VHeadDim;
        double total = c.VocabSize * h;
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            total += attention;
            total += c.IsMoeLayer(l)
                ? (c.NumExpertsPerTok + c.NSharedExperts) * 3.0 * c.MoeIntermediateSize * h + c.NRoutedExperts * h
                : 3.0 * c.IntermediateSize * h;
        }
        return total;
    }

    private static IOpBenchInstance Prepare(Backends.Backend backend, int batch)
    {
        var model = DeepSeekV3Model.Load(TinyPreset.EnsureCheckpoint(out _), backend);
        InferenceSession? session = null;
        try
        {
            session = model.CreateSession(batch, MaxDecodedTokens + 8);
            var state = new DecodeState(session, batch, model.Config.VocabSize);
            state.Prefill();
            return new DelegateBenchInstance(state.Step, session, model);
        }
        catch
        {
            session?.Dispose();
            model.Dispose();
            throw;
        }
    }

    private sealed class DecodeState(InferenceSession session, int batch, int vocab)
    {
        private readonly List<int> _sequences = [];
        private readonly int[][] _next = Enumerable.Range(0, batch).Select(i => new[] { (i * 37 + 5) % vocab }).ToArray();
        private readonly float[] _logits = new float[batch * vocab];
        private int _decoded;

        public void Prefill()
        {
            foreach (int s in _sequences) session.FreeSequence(s);
            _sequences.Clear();
            for (int i = 0; i < batch; i++) _sequences.Add(session.CreateSequence());
            session.Forward(_sequences, Enumerable.Range(0, batch).Select(i => new[] { 1, 2 + i % 7, 3, 4 }).ToArray(), _logits);
            _decoded = 0;
        }

        // One decode step; a rare re-prefill (every 256 steps) lands in one sample, which the median ignores.
        public void Step()
        {
            if (_decoded >= MaxDecodedTokens) Prefill();
            session.Forward(_sequences, _next, _logits);
            _decoded++;
        }
    }
}
