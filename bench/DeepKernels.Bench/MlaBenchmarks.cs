using BenchmarkDotNet.Attributes;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Bench.Infrastructure;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Bench;

/// <summary>
/// MLA decode on the CPU backend, shapes scaled down from the GPU anchors (b = 128,
/// seqlen 4096/8192) to fit a small CPU: b = 8, mean seqlen 2048, fixed or variable
/// lengths (uniform in [mean/4, 7*mean/4]), h_q in {16, 128}, s_q in {1, 2}, BF16 and FP8 pages.
/// Bytes = sum(seqlen) * h_kv * 576 * 2 + b * s_q * h_q * (576 + 512) * 2 and
/// flops = s_q * sum(seqlen) * h_q * (576 + 512) * 2 (DESIGN.md). The schedule is built once in
/// setup, as a model would once per step.
/// </summary>
public class MlaBenchmarks : IThroughputBenchmark
{
    private const int PageSize = 64;
    private Backend _backend = null!;
    private PagedLatentCache _cache = null!;
    private TensorBuffer _q = null!, _table = null!, _lens = null!, _out = null!, _lse = null!;
    private MlaSchedule _schedule = null!;

    /// <summary>Sequences in the batch.</summary>
    [Params(8)]
    public int B { get; set; } = 8;

    /// <summary>Mean cache length.</summary>
    [Params(2048)]
    public int MeanSeqlen { get; set; } = 2048;

    /// <summary>Whether lengths vary around the mean.</summary>
    [Params(false, true)]
    public bool VarLen { get; set; }

    /// <summary>Query heads.</summary>
    [Params(16, 128)]
    public int HQ { get; set; } = 16;

    /// <summary>Query tokens per sequence (2 = MTP, causal).</summary>
    [Params(1, 2)]
    public int SQ { get; set; } = 1;

    /// <summary>Page layout.</summary>
    [Params(LatentCacheLayout.BFloat16, LatentCacheLayout.Fp8)]
    public LatentCacheLayout Layout { get; set; }

    /// <summary>Lengths for the current parameters (deterministic, so columns can compute them without setup).</summary>
    public int[] Seqlens()
    {
        var rng = new Random(1234);
        return Enumerable.Range(0, B).Select(_ => VarLen ? rng.Next(MeanSeqlen / 4, MeanSeqlen * 7 / 4 + 1) : MeanSeqlen).ToArray();
    }

    /// <inheritdoc />
    public double Flops => (double)SQ * Seqlens().Sum(x => (long)x) * HQ * (576 + 512) * 2;

    /// <inheritdoc />
    public double Bytes => (double)Seqlens().Sum(x => (long)x) * 1 * 576 * 2 + (double)B * SQ * HQ * (576 + 512) * 2;

    /// <summary>Fills a cache with random latents and builds q, block table and schedule.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend();
        var lens = Seqlens();
        int pages = lens.Sum(l => (l + PageSize - 1) / PageSize);
        _cache = new PagedLatentCache(_backend, pages, PageSize, Layout);
        var rng = new Random(1);
        var seqs = new int[B];
        for (int b = 0; b < B; b++)
        {
            seqs[b] = _cache.Allocator.CreateSequence();
            _cache.Append(seqs[b], RandomFloats(lens[b] * 576, rng));
        }
        int maxPages = _cache.Allocator.MaxPages(seqs);
        var table = new int[B * maxPages];
        _cache.Allocator.ExportBlockTable(seqs, maxPages, table, lens);
        _q = _backend.Upload<float>(RandomFloats(B * SQ * HQ * 576, rng), DType.Float32, B, SQ, HQ, 576);
        _table = _backend.Upload<int>(table, DType.Int32, B, maxPages);
        _lens = _backend.Upload<int>(lens, DType.Int32, B);
        _out = _backend.Allocate(DType.BFloat16, B, SQ, HQ, 512);
        _lse = _backend.Allocate(DType.Float32, B, HQ, SQ);
        _schedule = MlaDecode.CreateSchedule(_backend, lens, PageSize);
    }

    private static float[] RandomFloats(int n, Random rng)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>One decode step of one layer.</summary>
    [Benchmark]
    public void Decode() => MlaDecode.Run(_backend, _q, _cache, _table, _lens, 0.1352338f, SQ > 1, _out, _lse, _schedule);

    /// <summary>Releases the tensors.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _q.Dispose();
        _table.Dispose();
        _lens.Dispose();
        _out.Dispose();
        _lse.Dispose();
        _cache.Dispose();
        _backend.Dispose();
    }
}
