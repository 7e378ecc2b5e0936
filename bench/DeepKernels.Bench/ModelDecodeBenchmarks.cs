using BenchmarkDotNet.Attributes;
using DeepKernels.Backends.Cpu;
using DeepKernels.Bench.Infrastructure;
using DeepKernels.Model;
using DeepKernels.Model.Presets;

namespace DeepKernels.Bench;

/// <summary>
/// One decode step of the built-in tiny DeepSeek-V3 model (<see cref="TinyPreset"/>) on the CPU
/// backend for a batch of sequences that each hold a 4-token prompt: every sequence appends one
/// token and gets its logits. Tokens/s = Batch / time (the tok/s column). Bytes counts the active weights read per
/// step (attention, dense MLP, router, shared and top-k experts, lm_head) plus the KV cache read.
/// </summary>
public class ModelDecodeBenchmarks : IThroughputBenchmark, ITokenBenchmark
{
    private CpuBackend _backend = null!;
    private DeepSeekV3Model _model = null!;
    private InferenceSession _session = null!;
    private readonly List<int> _sequences = [];
    private int[][] _next = [];
    private float[] _logits = [];

    /// <summary>Sequences decoded together.</summary>
    [Params(1, 8, 64)]
    public int Batch { get; set; } = 1;

    /// <inheritdoc />
    public double TokensPerInvoke => Batch;

    /// <inheritdoc />
    public double Flops => 2.0 * ActiveParameters(TinyPreset.Config) * Batch;

    /// <inheritdoc />
    public double Bytes => ActiveParameters(TinyPreset.Config) + TinyPreset.Config.VocabSize * (double)TinyPreset.Config.HiddenSize // lm_head is BF16: one more byte per weight
        + (double)Batch * 5 * TinyPreset.Config.NumHiddenLayers * TinyPreset.Config.LatentCacheDim * 2;

    /// <summary>Weights one token touches (FP8 projections, top-k and shared experts, router, lm_head), in parameters.</summary>
    internal static double ActiveParameters(DeepKernels.Model.Config.DeepSeekV3Config c)
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

    /// <summary>Writes (once) and loads the tiny checkpoint.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend();
        _model = DeepSeekV3Model.Load(TinyPreset.EnsureCheckpoint(out _), _backend);
        _session = _model.CreateSession(Batch, 64);
        _next = Enumerable.Range(0, Batch).Select(i => new[] { (i * 37 + 5) % _model.Config.VocabSize }).ToArray();
        _logits = new float[Batch * _model.Config.VocabSize];
    }

    /// <summary>Fresh sequences with a 4-token prompt before each measured step, so the cache never fills.</summary>
    [IterationSetup]
    public void Prefill()
    {
        foreach (int s in _sequences) _session.FreeSequence(s);
        _sequences.Clear();
        for (int i = 0; i < Batch; i++) _sequences.Add(_session.CreateSequence());
        _session.Forward(_sequences, Enumerable.Range(0, Batch).Select(i => new[] { 1, 2 + i % 7, 3, 4 }).ToArray(), _logits);
    }

    /// <summary>One decode step for the whole batch.</summary>
    [Benchmark]
    public void DecodeStep() => _session.Forward(_sequences, _next, _logits);

    /// <summary>Releases the model.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _session.Dispose();
        _model.Dispose();
        _backend.Dispose();
    }
}
