using System.Globalization;
using System.Text;

namespace DeepKernels.Model.Tokenization;

/// <summary>
/// The BPE model: a vocabulary and a ranked list of merges. A piece starts as one symbol per
/// character; the adjacent pair with the lowest merge rank (leftmost on ties) is merged, again and
/// again, until no adjacent pair has a merge. Results are cached per piece (bounded cache).
/// </summary>
public sealed class BpeModel
{
    /// <summary>Pieces kept in the cache before it is cleared.</summary>
    public const int CacheCapacity = 50_000;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<long, (int Rank, int Merged)> _merges;
    private readonly Dictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly Lock _cacheLock = new();
    private readonly int[]? _byteFallbackIds;

    /// <summary>
    /// Creates the model. Every merge (a, b) needs a, b and a + b in <paramref name="vocab"/>;
    /// <paramref name="source"/> names the file in errors.
    /// </summary>
    public BpeModel(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges,
        string? unkToken = null, bool byteFallback = false, bool ignoreMerges = false, bool fuseUnk = false, string source = "tokenizer.json")
    {
        ArgumentNullException.ThrowIfNull(vocab);
        ArgumentNullException.ThrowIfNull(merges);
        _vocab = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        _merges = new Dictionary<long, (int, int)>(merges.Count);
        for (int i = 0; i < merges.Count; i++)
        {
            var (a, b) = merges[i];
            string field = $"model.merges[{i.ToString(CultureInfo.InvariantCulture)}]";
            if (!_vocab.TryGetValue(a, out int ia)) throw new TokenizerFormatException(source, field, $"merge '{a} {b}' names '{a}', which is not in model.vocab.");
            if (!_vocab.TryGetValue(b, out int ib)) throw new TokenizerFormatException(source, field, $"merge '{a} {b}' names '{b}', which is not in model.vocab.");
            if (!_vocab.TryGetValue(a + b, out int merged)) throw new TokenizerFormatException(source, field, $"merge '{a} {b}' makes '{a + b}', which is not in model.vocab.");
            _merges.TryAdd(Key(ia, ib), (i, merged)); // a repeated pair keeps its first (best) rank
        }
        if (unkToken is not null && !_vocab.ContainsKey(unkToken)) throw new TokenizerFormatException(source, "model.unk_token", $"'{unkToken}' is not in model.vocab.");
        UnkToken = unkToken;
        IgnoreMerges = ignoreMerges;
        FuseUnk = fuseUnk;
        if (byteFallback)
        {
            _byteFallbackIds = new int[256];
            for (int b = 0; b < 256; b++)
            {
                string name = $"<0x{b:X2}>";
                if (!_vocab.TryGetValue(name, out _byteFallbackIds[b]))
                    throw new TokenizerFormatException(source, "model.byte_fallback", $"byte_fallback is true but the byte token '{name}' is not in model.vocab.");
            }
        }
        MergeCount = merges.Count;
    }

    /// <summary>The vocabulary (token -> id).</summary>
    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    /// <summary>Number of merges.</summary>
    public int MergeCount { get; }

    /// <summary>The token for characters missing from the vocabulary, if any.</summary>
    public string? UnkToken { get; }

    /// <summary>Whether a piece that is itself in the vocabulary is taken whole, without merging.</summary>
    public bool IgnoreMerges { get; }

    /// <summary>Whether consecutive unknown characters give one unknown token.</summary>
    public bool FuseUnk { get; }

    /// <summary>Whether characters missing from the vocabulary become byte tokens &lt;0xHH&gt;.</summary>
    public bool ByteFallback => _byteFallbackIds is not null;

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Appends the ids of one pre-tokenized piece to <paramref name="destination"/>.</summary>
    public void Encode(string piece, List<int> destination)
    {
        ArgumentNullException.ThrowIfNull(piece);
        ArgumentNullException.ThrowIfNull(destination);
        if (piece.Length == 0) return;
        if (IgnoreMerges && _vocab.TryGetValue(piece, out int whole))
        {
            destination.Add(whole);
            return;
        }
        int[]? ids;
        lock (_cacheLock) _cache.TryGetValue(piece, out ids);
        if (ids is null)
        {
            ids = Merge(piece);
            lock (_cacheLock)
            {
                if (_cache.Count >= CacheCapacity) _cache.Clear();
                _cache[piece] = ids;
            }
        }
        destination.AddRange(ids);
    }

    private int[] Merge(string piece)
    {
        // Initial symbols: one per character (surrogate pairs stay together).
        var symbols = new List<int>(piece.Length);
        int unkId = UnkToken is null ? -1 : _vocab[UnkToken];
        bool lastUnk = false;
        for (int i = 0; i < piece.Length;)
        {
            int len = char.IsSurrogatePair(piece, i) ? 2 : 1;
            string ch = piece.Substring(i, len);
            i += len;
            if (_vocab.TryGetValue(ch, out int known))
            {
                symbols.Add(known);
                lastUnk = false;
            }
            else if (_byteFallbackIds is not null)
            {
                foreach (byte b in Encoding.UTF8.GetBytes(ch)) symbols.Add(_byteFallbackIds[b]);
                lastUnk = false;
            }
            else if (unkId >= 0)
            {
                if (!(FuseUnk && lastUnk)) symbols.Add(unkId);
                lastUnk = true;
            }
            else
            {
                throw new ArgumentException($"The character U+{char.ConvertToUtf32(ch, 0):X4} is not in the vocabulary and the tokenizer has no unk_token or byte_fallback.", nameof(piece));
            }
        }
        int n = symbols.Count;
        if (n < 2) return symbols.ToArray();

        // Doubly linked symbols; a queue of candidate pairs by (rank, position), checked when popped.
        var id = symbols.ToArray();
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }
        var queue = new PriorityQueue<(int Left, int LeftId, int RightId, int Merged), (int Rank, int Position)>();
        void Push(int left)
        {
            int right = left < 0 ? -1 : next[left];
            if (left < 0 || right < 0) return;
            if (_merges.TryGetValue(Key(id[left], id[right]), out var m)) queue.Enqueue((left, id[left], id[right], m.Merged), (m.Rank, left));
        }
        for (int i = 0; i + 1 < n; i++) Push(i);
        while (queue.TryDequeue(out var c, out _))
        {
            int right = next[c.Left];
            // Stale entry: a neighbour was merged away since it was queued.
            if (id[c.Left] != c.LeftId || right < 0 || id[right] != c.RightId) continue;
            id[c.Left] = c.Merged;
            int after = next[right];
            next[c.Left] = after;
            if (after >= 0) prev[after] = c.Left;
            id[right] = -1;
            Push(prev[c.Left]);
            Push(c.Left);
        }
        var result = new List<int>(n);
        for (int i = 0; i >= 0; i = next[i]) result.Add(id[i]);
        return result.ToArray();
    }
}
