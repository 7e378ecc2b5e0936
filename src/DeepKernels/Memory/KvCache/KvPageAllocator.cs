namespace DeepKernels.Memory.KvCache;

/// <summary>
/// Hands out pages of a paged KV cache to sequences and keeps one block table (list of page
/// indices) per sequence. Thread-safe: every public member takes one lock, so concurrent
/// appends, forks and frees from many threads are safe.
/// <para>
/// Sharing and copy-on-write: <see cref="Fork"/> gives the child the parent's full pages by
/// reference (a reference count per page); the partially filled last page, if any, is not
/// shared but copied into a fresh page (the <see cref="KvForkResult"/> says which, and
/// <see cref="PagedLatentCache.Fork"/> copies the bytes). Since tokens are only ever appended,
/// shared pages are always full and never written again, so no later copy is needed: the copy
/// at fork time is the whole copy-on-write. A page returns to the free list when its last
/// owner is freed.
/// </para>
/// Sequence ids are never reused, so freeing a sequence twice is detected.
/// </summary>
public sealed class KvPageAllocator
{
    private readonly object _lock = new();
    private readonly int[] _refCounts;
    private readonly Stack<int> _free;
    private readonly Dictionary<int, Sequence> _live = [];
    private int _nextId;

    private sealed class Sequence
    {
        public readonly List<int> Pages = [];
        public int Length;
    }

    /// <summary>Creates an allocator for <paramref name="totalPages"/> pages of <paramref name="pageSize"/> tokens.</summary>
    public KvPageAllocator(int totalPages, int pageSize = LatentCacheFormat.DefaultPageSize)
    {
        Guard.Positive(totalPages, nameof(totalPages));
        LatentCacheFormat.ValidatePageSize(pageSize, nameof(pageSize));
        TotalPages = totalPages;
        PageSize = pageSize;
        _refCounts = new int[totalPages];
        _free = new Stack<int>(totalPages);
        // Pushed in reverse so pages are handed out in increasing order from a fresh allocator.
        for (int p = totalPages - 1; p >= 0; p--) _free.Push(p);
    }

    /// <summary>Tokens per page.</summary>
    public int PageSize { get; }

    /// <summary>Pages managed.</summary>
    public int TotalPages { get; }

    /// <summary>Pages not owned by any sequence.</summary>
    public int FreePages
    {
        get { lock (_lock) return _free.Count; }
    }

    /// <summary>Sequences created and not yet freed.</summary>
    public int LiveSequences
    {
        get { lock (_lock) return _live.Count; }
    }

    /// <summary>Pages needed to hold <paramref name="tokens"/> tokens.</summary>
    public int PagesFor(long tokens) => checked((int)((tokens + PageSize - 1) / PageSize));

    /// <summary>Creates an empty sequence and returns its id.</summary>
    public int CreateSequence()
    {
        lock (_lock)
        {
            int id = _nextId++;
            _live.Add(id, new Sequence());
            return id;
        }
    }

    /// <summary>
    /// Reserves <paramref name="tokens"/> more positions in <paramref name="sequence"/>, allocating
    /// pages as needed, and returns the first new position. All or nothing: on
    /// <see cref="KvCacheExhaustedException"/> the sequence is unchanged.
    /// </summary>
    public int Append(int sequence, int tokens)
    {
        Guard.NonNegative(tokens, nameof(tokens));
        lock (_lock)
        {
            var seq = Get(sequence);
            int start = seq.Length;
            long newLength = (long)start + tokens;
            if (newLength > int.MaxValue)
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"Sequence {sequence} would exceed {int.MaxValue} tokens.");
            int needed = PagesFor(newLength) - seq.Pages.Count;
            if (needed > _free.Count) throw new KvCacheExhaustedException(needed, _free.Count, TotalPages);
            for (int i = 0; i < needed; i++)
            {
                int page = _free.Pop();
                _refCounts[page] = 1;
                seq.Pages.Add(page);
            }
            seq.Length = (int)newLength;
            return start;
        }
    }

    /// <summary>
    /// Appends <paramref name="tokens"/> positions to every sequence of <paramref name="sequences"/>
    /// (distinct ids) as one all-or-nothing step: when the pages needed by all of them are not
    /// free, <see cref="KvCacheExhaustedException"/> is thrown and no sequence changes. Writes
    /// each sequence's first new position into <paramref name="starts"/>.
    /// </summary>
    public void AppendMany(ReadOnlySpan<int> sequences, int tokens, Span<int> starts)
    {
        Guard.NonNegative(tokens, nameof(tokens));
        Guard.Length(starts.Length, sequences.Length, nameof(starts));
        lock (_lock)
        {
            long needed = 0;
            for (int i = 0; i < sequences.Length; i++)
            {
                var seq = Get(sequences[i]);
                for (int j = 0; j < i; j++)
                    if (sequences[j] == sequences[i]) throw new ArgumentException($"Sequence {sequences[i]} appears twice.", nameof(sequences));
                long newLength = (long)seq.Length + tokens;
                if (newLength > int.MaxValue)
                    throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"Sequence {sequences[i]} would exceed {int.MaxValue} tokens.");
                needed += PagesFor(newLength) - seq.Pages.Count;
            }
            if (needed > _free.Count) throw new KvCacheExhaustedException((int)Math.Min(needed, int.MaxValue), _free.Count, TotalPages);
            for (int i = 0; i < sequences.Length; i++) starts[i] = Append(sequences[i], tokens);
        }
    }

    /// <summary>
    /// Creates a child sequence holding the same tokens as <paramref name="sequence"/>: full pages
    /// are shared by reference count, a partially filled last page is replaced by a fresh page
    /// whose contents the caller must copy (see <see cref="KvForkResult"/>).
    /// </summary>
    public KvForkResult Fork(int sequence)
    {
        lock (_lock)
        {
            var parent = Get(sequence);
            int partial = parent.Length % PageSize;
            if (partial != 0 && _free.Count == 0) throw new KvCacheExhaustedException(1, 0, TotalPages);
            int id = _nextId++;
            var child = new Sequence { Length = parent.Length };
            int shared = partial == 0 ? parent.Pages.Count : parent.Pages.Count - 1;
            for (int i = 0; i < shared; i++)
            {
                int page = parent.Pages[i];
                _refCounts[page]++;
                child.Pages.Add(page);
            }
            int source = -1, copy = -1;
            if (partial != 0)
            {
                source = parent.Pages[^1];
                copy = _free.Pop();
                _refCounts[copy] = 1;
                child.Pages.Add(copy);
            }
            _live.Add(id, child);
            return new KvForkResult(id, source, copy, partial);
        }
    }

    /// <summary>
    /// Frees <paramref name="sequence"/>; its pages return to the free list when no other sequence
    /// shares them. Throws <see cref="InvalidOperationException"/> when the sequence was already freed.
    /// </summary>
    public void Free(int sequence)
    {
        lock (_lock)
        {
            var seq = Get(sequence);
            foreach (int page in seq.Pages)
            {
                if (--_refCounts[page] == 0) _free.Push(page);
            }
            _live.Remove(sequence);
        }
    }

    /// <summary>Whether <paramref name="sequence"/> exists and has not been freed.</summary>
    public bool IsLive(int sequence)
    {
        lock (_lock) return _live.ContainsKey(sequence);
    }

    /// <summary>Tokens held by <paramref name="sequence"/>.</summary>
    public int Length(int sequence)
    {
        lock (_lock) return Get(sequence).Length;
    }

    /// <summary>A copy of the block table (page indices in token order) of <paramref name="sequence"/>.</summary>
    public int[] Pages(int sequence)
    {
        lock (_lock) return [.. Get(sequence).Pages];
    }

    /// <summary>Owners of <paramref name="page"/> (0 = free).</summary>
    public int ReferenceCount(int page)
    {
        if ((uint)page >= (uint)TotalPages)
            throw new ArgumentOutOfRangeException(nameof(page), page, $"Expected a page in [0, {TotalPages}).");
        lock (_lock) return _refCounts[page];
    }

    /// <summary>
    /// Writes the global slot (page * page_size + offset) of positions
    /// [<paramref name="start"/>, start + slots.Length) of <paramref name="sequence"/> into <paramref name="slots"/>.
    /// </summary>
    public void GetSlots(int sequence, int start, Span<int> slots)
    {
        lock (_lock)
        {
            var seq = Get(sequence);
            if (start < 0 || (long)start + slots.Length > seq.Length)
                throw new ArgumentOutOfRangeException(nameof(start), $"Expected positions [{start}, {(long)start + slots.Length}) within sequence {sequence} of length {seq.Length}.");
            for (int i = 0; i < slots.Length; i++)
            {
                int pos = start + i;
                slots[i] = seq.Pages[pos / PageSize] * PageSize + pos % PageSize;
            }
        }
    }

    /// <summary>The largest block table among <paramref name="sequences"/> (the max_pages of an export).</summary>
    public int MaxPages(ReadOnlySpan<int> sequences)
    {
        lock (_lock)
        {
            int max = 0;
            foreach (int s in sequences) max = Math.Max(max, Get(s).Pages.Count);
            return max;
        }
    }

    /// <summary>
    /// Exports the block tables of <paramref name="sequences"/> as an int32 [b, <paramref name="maxPages"/>]
    /// row-major array (unused entries = -1) and their lengths as cache_seqlens [b], the inputs of
    /// the MLA decode op.
    /// </summary>
    public void ExportBlockTable(ReadOnlySpan<int> sequences, int maxPages, Span<int> blockTable, Span<int> cacheSeqlens)
    {
        Guard.NonNegative(maxPages, nameof(maxPages));
        Guard.Length(blockTable.Length, (long)sequences.Length * maxPages, nameof(blockTable));
        Guard.Length(cacheSeqlens.Length, sequences.Length, nameof(cacheSeqlens));
        lock (_lock)
        {
            for (int b = 0; b < sequences.Length; b++)
            {
                var seq = Get(sequences[b]);
                if (seq.Pages.Count > maxPages)
                    throw new ArgumentException($"Sequence {sequences[b]} holds {seq.Pages.Count} pages, more than maxPages = {maxPages}.", nameof(maxPages));
                var row = blockTable.Slice(b * maxPages, maxPages);
                row.Fill(-1);
                for (int i = 0; i < seq.Pages.Count; i++) row[i] = seq.Pages[i];
                cacheSeqlens[b] = seq.Length;
            }
        }
    }

    /// <summary>Whether <paramref name="page"/> is the <paramref name="index"/>-th page of <paramref name="sequence"/>.</summary>
    internal bool OwnsPageAt(int sequence, int index, int page)
    {
        lock (_lock)
        {
            if (!_live.TryGetValue(sequence, out var seq)) return false;
            return (uint)index < (uint)seq.Pages.Count && seq.Pages[index] == page;
        }
    }

    /// <summary>Whether <paramref name="page"/> is owned by at least one live sequence.</summary>
    internal bool IsAllocated(int page)
    {
        lock (_lock) return (uint)page < (uint)TotalPages && _refCounts[page] > 0;
    }

    private Sequence Get(int sequence)
    {
        if (_live.TryGetValue(sequence, out var seq)) return seq;
        if (sequence >= 0 && sequence < _nextId)
            throw new InvalidOperationException($"Sequence {sequence} has already been freed (double free or use after free).");
        throw new ArgumentException($"Unknown sequence {sequence}; ids come from CreateSequence or Fork.", nameof(sequence));
    }
}

/// <summary>
/// Result of <see cref="KvPageAllocator.Fork"/>: the child's id and, when the parent's last page
/// was partially filled, the page to copy from (<see cref="SourcePage"/>), the child's private
/// copy (<see cref="CopyPage"/>) and how many tokens of it are valid. Both pages are -1 when
/// nothing needs copying.
/// </summary>
public readonly record struct KvForkResult(int Sequence, int SourcePage, int CopyPage, int CopiedTokens)
{
    /// <summary>Whether a partial page must be copied.</summary>
    public bool NeedsCopy => CopyPage >= 0;
}
