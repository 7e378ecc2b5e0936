using DeepKernels.Backends;
using DeepKernels.Memory.KvCache;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MlaDecode;

/// <summary>
/// Multi-head Latent Attention decode over a <see cref="PagedLatentCache"/>, in the absorbed
/// (MQA) form: q = [W_UK^T q_nope (512) ; q_pe (64)] per head, K = [c_kv (512) ; k_pe (64)],
/// V = c_kv (512), one KV head shared by all query heads (h_kv = 1).
/// <para>
/// For sequence b, query token i of s_q and head h:
/// out = sum_j softmax_j(scale * q·K_j) V_j over keys j in [0, cache_seqlens[b]); with
/// <c>causal</c>, query i sees only keys j &lt;= seqlen - s_q + i (the s_q newest tokens are the
/// queries themselves, as in multi-token prediction). lse = ln(sum_j exp(scale * q·K_j)).
/// A query that sees no key (seqlen 0) gets out = 0 and lse = +inf.
/// </para>
/// Split-KV: the work is cut by an <see cref="MlaSchedule"/> into page-aligned chunks whose
/// partial (out, lse) pairs are merged: lse = ln(sum_c exp(lse_c)), out = sum_c exp(lse_c - lse) out_c.
/// </summary>
public static class MlaDecode
{
    /// <summary>The latent (value) width: 512.</summary>
    public const int LatentDim = LatentCacheFormat.LatentDim;

    /// <summary>The query/key width: 576.</summary>
    public const int HeadDim = LatentCacheFormat.HeadDim;

    /// <summary>Builds a schedule with the worker count the backend prefers (threads on CPU, SMs on CUDA).</summary>
    public static MlaSchedule CreateSchedule(Backend backend, ReadOnlySpan<int> cacheSeqlens, int pageSize)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var impl = Guard.Implementation<IMlaDecodeBackend>(backend, "MLA decode");
        return MlaSchedule.Create(cacheSeqlens, pageSize, impl.MlaWorkers);
    }

    /// <summary>
    /// Runs decode on <paramref name="backend"/>.
    /// </summary>
    /// <param name="backend">Where all tensors live.</param>
    /// <param name="q">[b, s_q, h_q, 576] Float32 or BFloat16, absorbed queries.</param>
    /// <param name="cache">The latent cache (its backend must be <paramref name="backend"/>).</param>
    /// <param name="blockTable">[b, max_pages] Int32: page of each block of each sequence.</param>
    /// <param name="cacheSeqlens">[b] Int32: tokens per sequence (including the s_q new ones).</param>
    /// <param name="softmaxScale">Scale applied to q·K (0.1352338 for DeepSeek-V3 with YaRN).</param>
    /// <param name="causal">Mask later keys for s_q &gt; 1 (query i sees keys up to seqlen - s_q + i).</param>
    /// <param name="output">[b, s_q, h_q, 512] Float32 or BFloat16.</param>
    /// <param name="lse">[b, h_q, s_q] Float32, natural log.</param>
    /// <param name="schedule">Split-KV metadata for these seqlens; null builds one (build it once per step instead).</param>
    /// <param name="sequenceIds">
    /// When given, the allocator sequence of each batch row: every used block table entry must
    /// be that sequence's page. When empty, used entries must be pages some sequence owns.
    /// </param>
    public static void Run(Backend backend, TensorView q, PagedLatentCache cache, TensorView blockTable, TensorView cacheSeqlens,
        float softmaxScale, bool causal, TensorView output, TensorView lse, MlaSchedule? schedule = null, ReadOnlySpan<int> sequenceIds = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(cache);
        if (!ReferenceEquals(cache.Backend, backend))
            throw new ArgumentException($"Expected a cache on backend '{backend.Name}', got one on '{cache.Backend.Name}'.", nameof(cache));
        LatentCacheFormat.ValidatePageSize(cache.PageSize, "cache.PageSize");

        var (b, sQ, hQ) = ValidateQueries(backend, q, softmaxScale, output, lse);
        Guard.Rank(blockTable, 2, nameof(blockTable));
        Guard.DType(blockTable, DType.Int32, nameof(blockTable));
        if (blockTable.Dim(0) != b)
            throw new ArgumentException($"Expected blockTable with {b} rows (batch of q), got {blockTable}.", nameof(blockTable));
        long maxPages = blockTable.Dim(1);
        Guard.DType(cacheSeqlens, DType.Int32, nameof(cacheSeqlens));
        Guard.Shape(cacheSeqlens, nameof(cacheSeqlens), b);
        foreach (var (view, name) in new[] { (blockTable, nameof(blockTable)), (cacheSeqlens, nameof(cacheSeqlens)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        if (!sequenceIds.IsEmpty) Guard.Length(sequenceIds.Length, b, nameof(sequenceIds));

        // Device-resident tables are downloaded to be checked: one synchronisation per call.
        // MlaBlockTable checks once per step on the host instead.
        int[] lens = ReadInts(backend, cacheSeqlens);
        int[] table = ReadInts(backend, blockTable);
        ValidateTable(cache, table, lens, (int)maxPages, sequenceIds);
        int page = cache.PageSize;

        var impl = Guard.Implementation<IMlaDecodeBackend>(backend, "MLA decode");
        schedule ??= MlaSchedule.Create(lens, page, impl.MlaWorkers);
        if (!schedule.Matches(lens, page))
            throw new ArgumentException("Expected a schedule built for these cacheSeqlens and the cache's page size; build one per step with MlaDecode.CreateSchedule.", nameof(schedule));
        if (b == 0) return;
        impl.MlaDecode(new MlaDecodeArgs(q, cache.Storage, cache.Layout, page, blockTable, (int)maxPages, lens, schedule,
            softmaxScale, causal, output, lse, (int)b, (int)sQ, (int)hQ));
    }

    /// <summary>
    /// Runs decode on <paramref name="backend"/> with a step's <paramref name="tables"/>, checked
    /// and uploaded once by <see cref="MlaBlockTable.Create"/>: nothing is read back from the
    /// device. The other arguments are as in the overload that takes device tables.
    /// </summary>
    public static void Run(Backend backend, TensorView q, PagedLatentCache cache, MlaBlockTable tables,
        float softmaxScale, bool causal, TensorView output, TensorView lse)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(tables);
        if (!ReferenceEquals(cache.Backend, backend))
            throw new ArgumentException($"Expected a cache on backend '{backend.Name}', got one on '{cache.Backend.Name}'.", nameof(cache));
        if (!ReferenceEquals(cache.Allocator, tables.Allocator))
            throw new ArgumentException("Expected tables checked against this cache's page allocator; build them with MlaBlockTable.Create over a cache sharing it.", nameof(tables));
        if (!tables.Schedule.Matches(tables.Seqlens, cache.PageSize))
            throw new ArgumentException($"Expected tables built for page size {cache.PageSize}, the cache's.", nameof(tables));
        Guard.OnBackend(tables.BlockTable, backend, nameof(tables));
        var (b, sQ, hQ) = ValidateQueries(backend, q, softmaxScale, output, lse);
        if (b != tables.Batch)
            throw new ArgumentException($"Expected tables for a batch of {b} (q's), got {tables.Batch}.", nameof(tables));
        var impl = Guard.Implementation<IMlaDecodeBackend>(backend, "MLA decode");
        if (b == 0) return;
        impl.MlaDecode(new MlaDecodeArgs(q, cache.Storage, cache.Layout, cache.PageSize, tables.BlockTable, tables.MaxPages, tables.Seqlens,
            tables.Schedule, softmaxScale, causal, output, lse, (int)b, (int)sQ, (int)hQ));
    }

    private static (long Batch, long SQ, long HQ) ValidateQueries(Backend backend, TensorView q, float softmaxScale, TensorView output, TensorView lse)
    {
        Guard.Rank(q, 4, nameof(q));
        Guard.DType(q, DType.Float32, DType.BFloat16, nameof(q));
        long b = q.Dim(0), sQ = q.Dim(1), hQ = q.Dim(2);
        if (q.Dim(3) != HeadDim)
            throw new ArgumentException($"Expected q head dim {HeadDim} (512 absorbed nope + 64 rope), got {q}.", nameof(q));
        Guard.Positive(sQ, "s_q");
        Guard.Positive(hQ, "h_q");
        const int hKv = 1;
        if (hQ % hKv != 0) throw new ArgumentException($"Expected h_q divisible by h_kv = {hKv}, got h_q = {hQ}.", nameof(q));
        if (!float.IsFinite(softmaxScale) || softmaxScale <= 0)
            throw new ArgumentOutOfRangeException(nameof(softmaxScale), softmaxScale, "Expected a finite softmax scale > 0.");
        Guard.DType(output, DType.Float32, DType.BFloat16, nameof(output));
        Guard.Shape(output, nameof(output), b, sQ, hQ, LatentDim);
        Guard.DType(lse, DType.Float32, nameof(lse));
        Guard.Shape(lse, nameof(lse), b, hQ, sQ);
        foreach (var (view, name) in new[] { (q, nameof(q)), (output, nameof(output)), (lse, nameof(lse)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        return (b, sQ, hQ);
    }

    /// <summary>Every used block-table entry names a page of the cache that its sequence owns; lengths fit the table.</summary>
    internal static void ValidateTable(PagedLatentCache cache, ReadOnlySpan<int> blockTable, ReadOnlySpan<int> cacheSeqlens, int maxPages, ReadOnlySpan<int> sequenceIds)
    {
        int page = cache.PageSize;
        var alloc = cache.Allocator;
        for (int i = 0; i < cacheSeqlens.Length; i++)
        {
            int len = cacheSeqlens[i];
            if (len < 0) throw new ArgumentException($"Expected cacheSeqlens[{i}] >= 0, got {len}.", nameof(cacheSeqlens));
            long pages = (len + (long)page - 1) / page;
            if (pages > maxPages)
                throw new ArgumentException($"cacheSeqlens[{i}] = {len} needs {pages} pages of {page} tokens, but blockTable has {maxPages} columns.", nameof(cacheSeqlens));
            for (int p = 0; p < pages; p++)
            {
                int entry = blockTable[i * maxPages + p];
                if ((uint)entry >= (uint)cache.NumPages)
                    throw new ArgumentException($"blockTable[{i}, {p}] = {entry} is outside the cache's pages [0, {cache.NumPages}).", nameof(blockTable));
                if (!sequenceIds.IsEmpty)
                {
                    if (!alloc.OwnsPageAt(sequenceIds[i], p, entry))
                        throw new ArgumentException($"blockTable[{i}, {p}] = {entry} is not block {p} of sequence {sequenceIds[i]}.", nameof(blockTable));
                }
                else if (!alloc.IsAllocated(entry))
                {
                    throw new ArgumentException($"blockTable[{i}, {p}] = {entry} is a free page, owned by no sequence.", nameof(blockTable));
                }
            }
            if (!sequenceIds.IsEmpty && alloc.Length(sequenceIds[i]) < len)
                throw new ArgumentException($"cacheSeqlens[{i}] = {len} exceeds the {alloc.Length(sequenceIds[i])} tokens of sequence {sequenceIds[i]}.", nameof(cacheSeqlens));
        }
    }

    /// <summary>
    /// Host convenience on a host-memory cache: q is float [b * s_q * h_q * 576], block table
    /// int [b * max_pages], output float [b * s_q * h_q * 512], lse float [b * h_q * s_q].
    /// </summary>
    public static unsafe void Run(PagedLatentCache cache, ReadOnlySpan<float> q, int batch, int sQ, int hQ,
        ReadOnlySpan<int> blockTable, ReadOnlySpan<int> cacheSeqlens, float softmaxScale, bool causal,
        Span<float> output, Span<float> lse, MlaSchedule? schedule = null)
    {
        ArgumentNullException.ThrowIfNull(cache);
        if (cache.Backend.MemoryLocation != MemoryLocation.Host)
            throw new ArgumentException($"The span overload needs a cache in host memory; this one is on '{cache.Backend.Name}'.", nameof(cache));
        Guard.NonNegative(batch, nameof(batch));
        Guard.Positive(sQ, nameof(sQ));
        Guard.Positive(hQ, nameof(hQ));
        Guard.Length(q.Length, (long)batch * sQ * hQ * HeadDim, nameof(q));
        Guard.Length(cacheSeqlens.Length, batch, nameof(cacheSeqlens));
        Guard.Length(output.Length, (long)batch * sQ * hQ * LatentDim, nameof(output));
        Guard.Length(lse.Length, (long)batch * hQ * sQ, nameof(lse));
        if (batch > 0 && blockTable.Length % batch != 0)
            throw new ArgumentException($"Expected blockTable length to be a multiple of batch = {batch}, got {blockTable.Length}.", nameof(blockTable));
        long maxPages = batch == 0 ? 0 : blockTable.Length / batch;
        const MemoryLocation H = MemoryLocation.Host;
        fixed (float* pq = q)
        fixed (int* pt = blockTable)
        fixed (int* pl = cacheSeqlens)
        fixed (float* po = output)
        fixed (float* pe = lse)
        {
            Run(cache.Backend,
                new TensorView((nint)pq, DType.Float32, H, batch, sQ, hQ, HeadDim),
                cache,
                new TensorView((nint)pt, DType.Int32, H, batch, maxPages),
                new TensorView((nint)pl, DType.Int32, H, batch),
                softmaxScale, causal,
                new TensorView((nint)po, DType.Float32, H, batch, sQ, hQ, LatentDim),
                new TensorView((nint)pe, DType.Float32, H, batch, hQ, sQ),
                schedule);
        }
    }

    private static int[] ReadInts(Backend backend, TensorView view)
    {
        if (view.Location == MemoryLocation.Host) return view.AsSpan<int>().ToArray();
        return backend.Download<int>(view);
    }
}

/// <summary>Validated arguments of <see cref="MlaDecode"/>; Seqlens is a host copy of cache_seqlens.</summary>
internal readonly record struct MlaDecodeArgs(TensorView Q, TensorView Cache, LatentCacheLayout Layout, int PageSize,
    TensorView BlockTable, int MaxPages, int[] Seqlens, MlaSchedule Schedule, float SoftmaxScale, bool Causal,
    TensorView Output, TensorView Lse, int Batch, int SQ, int HQ);

/// <summary>A backend's implementation of MLA decode.</summary>
internal interface IMlaDecodeBackend
{
    /// <summary>Workers a schedule should balance over (threads, SMs).</summary>
    int MlaWorkers { get; }

    void MlaDecode(in MlaDecodeArgs args);
}
