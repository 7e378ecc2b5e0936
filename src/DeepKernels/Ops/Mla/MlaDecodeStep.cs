using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;

namespace DeepKernels.Ops.Mla;

/// <summary>
/// Everything one decode step shares across layers: the new tokens' positions and cache slots,
/// the exported block table and cache_seqlens, and the split-KV <see cref="MlaSchedule"/>.
/// <see cref="Begin"/> reserves s_q positions per sequence in the allocator (once per step, not
/// per layer); every layer's cache (sharing that allocator) then writes at the same slots.
/// </summary>
public sealed class MlaDecodeStep
{
    private MlaDecodeStep(int[] sequences, int sQ, int[] positions, int[] slots, int[] blockTable, int maxPages, int[] seqlens, MlaSchedule schedule)
    {
        Sequences = sequences;
        SQ = sQ;
        Positions = positions;
        Slots = slots;
        BlockTable = blockTable;
        MaxPages = maxPages;
        Seqlens = seqlens;
        Schedule = schedule;
    }

    /// <summary>Allocator sequence ids, one per batch row.</summary>
    public int[] Sequences { get; }

    /// <summary>New tokens per sequence.</summary>
    public int SQ { get; }

    /// <summary>Absolute position of each new token, [b * s_q].</summary>
    public int[] Positions { get; }

    /// <summary>Cache slot (page * page_size + offset) of each new token, [b * s_q].</summary>
    public int[] Slots { get; }

    /// <summary>Block table [b * max_pages] (unused entries -1).</summary>
    public int[] BlockTable { get; }

    /// <summary>Columns of <see cref="BlockTable"/>.</summary>
    public int MaxPages { get; }

    /// <summary>cache_seqlens [b], including the new tokens.</summary>
    public int[] Seqlens { get; }

    /// <summary>Split-KV schedule for <see cref="Seqlens"/>.</summary>
    public MlaSchedule Schedule { get; }

    /// <summary>
    /// Reserves <paramref name="sQ"/> new positions in each of <paramref name="sequences"/> (all or
    /// nothing) and builds the step's shared metadata with <paramref name="workers"/> split-KV workers.
    /// </summary>
    public static MlaDecodeStep Begin(KvPageAllocator allocator, ReadOnlySpan<int> sequences, int sQ, int workers)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        Guard.Positive(sQ, nameof(sQ));
        int b = sequences.Length;
        var starts = new int[b];
        allocator.AppendMany(sequences, sQ, starts);
        var positions = new int[b * sQ];
        var slots = new int[b * sQ];
        for (int i = 0; i < b; i++)
        {
            for (int s = 0; s < sQ; s++) positions[i * sQ + s] = starts[i] + s;
            allocator.GetSlots(sequences[i], starts[i], slots.AsSpan(i * sQ, sQ));
        }
        int maxPages = allocator.MaxPages(sequences);
        var table = new int[b * maxPages];
        var lens = new int[b];
        allocator.ExportBlockTable(sequences, maxPages, table, lens);
        var schedule = MlaSchedule.Create(lens, allocator.PageSize, workers);
        return new MlaDecodeStep(sequences.ToArray(), sQ, positions, slots, table, maxPages, lens, schedule);
    }
}
