using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Memory.KvCache;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MlaDecode;

/// <summary>
/// One decode step's block table and cache lengths, checked on the host once against the page
/// allocator, uploaded once and shared by every layer whose cache uses that allocator. Decoding
/// through it reads nothing back from the device, so a step costs no synchronisation per layer
/// (the <see cref="MlaDecode.Run(Backend, TensorView, PagedLatentCache, TensorView, TensorView, float, bool, TensorView, TensorView, MlaSchedule?, ReadOnlySpan{int})"/>
/// overload that takes device tables has to download them to check them).
/// </summary>
public sealed class MlaBlockTable
{
    private MlaBlockTable(KvPageAllocator allocator, int[] seqlens, int maxPages, TensorView blockTable, TensorView cacheSeqlens, MlaSchedule schedule)
    {
        Allocator = allocator;
        Seqlens = seqlens;
        MaxPages = maxPages;
        BlockTable = blockTable;
        CacheSeqlens = cacheSeqlens;
        Schedule = schedule;
    }

    /// <summary>The allocator whose pages the table was checked against.</summary>
    public KvPageAllocator Allocator { get; }

    /// <summary>Sequences in the batch.</summary>
    public int Batch => Seqlens.Length;

    /// <summary>Columns of the block table.</summary>
    public int MaxPages { get; }

    /// <summary>The uploaded [batch, max_pages] Int32 block table.</summary>
    public TensorView BlockTable { get; }

    /// <summary>The uploaded [batch] Int32 cache lengths.</summary>
    public TensorView CacheSeqlens { get; }

    /// <summary>The split-KV schedule for these lengths.</summary>
    public MlaSchedule Schedule { get; }

    /// <summary>Host copy of the cache lengths (what the schedule and launch read).</summary>
    internal int[] Seqlens { get; }

    /// <summary>
    /// Checks <paramref name="blockTable"/> ([batch * max_pages]) and <paramref name="cacheSeqlens"/>
    /// ([batch]) against <paramref name="cache"/>'s allocator, exactly as
    /// <see cref="MlaDecode"/> does, then copies them into <paramref name="deviceBlockTable"/>
    /// ([batch, max_pages] Int32) and <paramref name="deviceSeqlens"/> ([batch] Int32) on
    /// <paramref name="backend"/> (workspace the caller owns and keeps unchanged while the table is in use).
    /// </summary>
    /// <param name="backend">Where the decode runs.</param>
    /// <param name="cache">A cache whose allocator owns the pages (every layer's cache sharing it may use the result).</param>
    /// <param name="blockTable">Host [batch * max_pages]: page of each block of each sequence.</param>
    /// <param name="cacheSeqlens">Host [batch]: tokens per sequence (including the s_q new ones).</param>
    /// <param name="deviceBlockTable">Destination [batch, max_pages] Int32 on <paramref name="backend"/>.</param>
    /// <param name="deviceSeqlens">Destination [batch] Int32 on <paramref name="backend"/>.</param>
    /// <param name="sequenceIds">When given, the allocator sequence of each batch row (see <see cref="MlaDecode"/>).</param>
    public static MlaBlockTable Create(Backend backend, PagedLatentCache cache, ReadOnlySpan<int> blockTable, ReadOnlySpan<int> cacheSeqlens,
        TensorView deviceBlockTable, TensorView deviceSeqlens, ReadOnlySpan<int> sequenceIds = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(cache);
        if (!ReferenceEquals(cache.Backend, backend))
            throw new ArgumentException($"Expected a cache on backend '{backend.Name}', got one on '{cache.Backend.Name}'.", nameof(cache));
        int batch = cacheSeqlens.Length;
        Guard.Rank(deviceBlockTable, 2, nameof(deviceBlockTable));
        Guard.DType(deviceBlockTable, DType.Int32, nameof(deviceBlockTable));
        if (deviceBlockTable.Dim(0) != batch)
            throw new ArgumentException($"Expected deviceBlockTable with {batch} rows (one per cache length), got {deviceBlockTable}.", nameof(deviceBlockTable));
        long maxPages = deviceBlockTable.Dim(1);
        Guard.Length(blockTable.Length, batch * maxPages, nameof(blockTable));
        Guard.DType(deviceSeqlens, DType.Int32, nameof(deviceSeqlens));
        Guard.Shape(deviceSeqlens, nameof(deviceSeqlens), batch);
        foreach (var (view, name) in new[] { (deviceBlockTable, nameof(deviceBlockTable)), (deviceSeqlens, nameof(deviceSeqlens)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        if (!sequenceIds.IsEmpty) Guard.Length(sequenceIds.Length, batch, nameof(sequenceIds));

        MlaDecode.ValidateTable(cache, blockTable, cacheSeqlens, (int)maxPages, sequenceIds);
        backend.CopyFromHost(MemoryMarshal.AsBytes(blockTable), deviceBlockTable);
        backend.CopyFromHost(MemoryMarshal.AsBytes(cacheSeqlens), deviceSeqlens);
        return new MlaBlockTable(cache.Allocator, cacheSeqlens.ToArray(), (int)maxPages, deviceBlockTable, deviceSeqlens,
            MlaDecode.CreateSchedule(backend, cacheSeqlens, cache.PageSize));
    }
}
