namespace DeepKernels.Ops.MlaDecode;

/// <summary>
/// Split-KV scheduler metadata for <see cref="MlaDecode"/>: which worker (an SM on CUDA, a
/// thread on the CPU) handles which token range of which sequence. Computed once per decode
/// step on the host from cache_seqlens and reused by every layer, since all layers share the
/// block tables and lengths.
/// <para>
/// Balancing: the pages of all sequences are laid end to end (a partial last page counts as a
/// page) and worker w takes pages [floor(w*T/W), floor((w+1)*T/W)) of the T in total, so the
/// workers' page counts differ by at most one. Where a worker's range crosses a sequence
/// boundary it gets one chunk per sequence; a sequence covered by several chunks is a split
/// sequence whose partial results are merged by their LSEs. Chunks are page-aligned and every
/// (sequence, token) pair lies in exactly one chunk; chunks of sequence b are consecutive,
/// [<see cref="SequenceChunkOffsets"/>[b], [b+1]).
/// </para>
/// </summary>
public sealed class MlaSchedule
{
    private readonly int[] _seqlens;
    private readonly int[] _chunkBatch;
    private readonly int[] _chunkStart;
    private readonly int[] _chunkEnd;
    private readonly int[] _workerOffsets;
    private readonly int[] _sequenceOffsets;

    private MlaSchedule(int[] seqlens, int pageSize, int workers, int[] chunkBatch, int[] chunkStart, int[] chunkEnd, int[] workerOffsets, int[] sequenceOffsets)
    {
        _seqlens = seqlens;
        PageSize = pageSize;
        NumWorkers = workers;
        _chunkBatch = chunkBatch;
        _chunkStart = chunkStart;
        _chunkEnd = chunkEnd;
        _workerOffsets = workerOffsets;
        _sequenceOffsets = sequenceOffsets;
    }

    /// <summary>Sequences in the batch.</summary>
    public int Batch => _seqlens.Length;

    /// <summary>Tokens per page the chunks are aligned to.</summary>
    public int PageSize { get; }

    /// <summary>Workers the pages are spread over.</summary>
    public int NumWorkers { get; }

    /// <summary>Number of chunks (work items along the KV dimension).</summary>
    public int NumChunks => _chunkBatch.Length;

    /// <summary>The cache_seqlens the schedule was built for.</summary>
    public ReadOnlySpan<int> Seqlens => _seqlens;

    /// <summary>Sequence index of each chunk.</summary>
    public ReadOnlySpan<int> ChunkBatch => _chunkBatch;

    /// <summary>First token of each chunk (a multiple of <see cref="PageSize"/>).</summary>
    public ReadOnlySpan<int> ChunkStart => _chunkStart;

    /// <summary>One past the last token of each chunk.</summary>
    public ReadOnlySpan<int> ChunkEnd => _chunkEnd;

    /// <summary>Worker w runs chunks [WorkerChunkOffsets[w], WorkerChunkOffsets[w+1]); length workers + 1.</summary>
    public ReadOnlySpan<int> WorkerChunkOffsets => _workerOffsets;

    /// <summary>Chunks of sequence b are [SequenceChunkOffsets[b], SequenceChunkOffsets[b+1]); length batch + 1.</summary>
    public ReadOnlySpan<int> SequenceChunkOffsets => _sequenceOffsets;

    /// <summary>
    /// Builds the schedule for <paramref name="cacheSeqlens"/> (each >= 0) with pages of
    /// <paramref name="pageSize"/> tokens over <paramref name="numWorkers"/> workers.
    /// </summary>
    public static MlaSchedule Create(ReadOnlySpan<int> cacheSeqlens, int pageSize, int numWorkers)
    {
        Guard.Positive(pageSize, nameof(pageSize));
        Guard.Positive(numWorkers, nameof(numWorkers));
        int b = cacheSeqlens.Length;
        var pageOffsets = new long[b + 1];
        for (int i = 0; i < b; i++)
        {
            if (cacheSeqlens[i] < 0)
                throw new ArgumentException($"Expected cache_seqlens[{i}] >= 0, got {cacheSeqlens[i]}.", nameof(cacheSeqlens));
            pageOffsets[i + 1] = pageOffsets[i] + (cacheSeqlens[i] + (long)pageSize - 1) / pageSize;
        }
        long total = pageOffsets[b];
        var batch = new List<int>();
        var start = new List<int>();
        var end = new List<int>();
        var workerOffsets = new int[numWorkers + 1];
        int seq = 0;
        for (int w = 0; w < numWorkers; w++)
        {
            workerOffsets[w] = batch.Count;
            long p0 = total * w / numWorkers, p1 = total * (w + 1) / numWorkers;
            while (p0 < p1)
            {
                while (pageOffsets[seq + 1] <= p0) seq++; // skips empty sequences too
                long last = Math.Min(p1, pageOffsets[seq + 1]);
                int first = (int)(p0 - pageOffsets[seq]);
                batch.Add(seq);
                start.Add(first * pageSize);
                end.Add((int)Math.Min((long)cacheSeqlens[seq], (last - pageOffsets[seq]) * pageSize));
                p0 = last;
            }
        }
        workerOffsets[numWorkers] = batch.Count;
        // Chunks were produced in sequence order, so each sequence's chunks are consecutive.
        var sequenceOffsets = new int[b + 1];
        foreach (int s in batch) sequenceOffsets[s + 1]++;
        for (int i = 0; i < b; i++) sequenceOffsets[i + 1] += sequenceOffsets[i];
        return new MlaSchedule(cacheSeqlens.ToArray(), pageSize, numWorkers, [.. batch], [.. start], [.. end], workerOffsets, sequenceOffsets);
    }

    /// <summary>Whether this schedule was built for exactly these lengths and page size.</summary>
    public bool Matches(ReadOnlySpan<int> cacheSeqlens, int pageSize) =>
        pageSize == PageSize && cacheSeqlens.SequenceEqual(_seqlens);
}
