namespace DeepKernels.Model.Tokenization;

/// <summary>
/// A small, deterministic BPE trainer: starting from single characters, it repeatedly merges the
/// adjacent pair that occurs most often (weighted by word counts) until the merge budget is spent
/// or no pair is left. Ties go to the pair whose symbols were created first, so the result depends
/// only on the input.
/// </summary>
public static class BpeTrainer
{
    /// <summary>
    /// Learns up to <paramref name="maxMerges"/> merges from pre-tokenized words and their counts.
    /// Words are split into characters (surrogate pairs kept together).
    /// </summary>
    public static List<(string Left, string Right)> Train(IReadOnlyDictionary<string, int> wordCounts, int maxMerges)
    {
        ArgumentNullException.ThrowIfNull(wordCounts);
        ArgumentOutOfRangeException.ThrowIfNegative(maxMerges);
        var symbols = new List<string>();
        var symbolIds = new Dictionary<string, int>(StringComparer.Ordinal);
        int Intern(string s)
        {
            if (!symbolIds.TryGetValue(s, out int id))
            {
                id = symbols.Count;
                symbols.Add(s);
                symbolIds[s] = id;
            }
            return id;
        }
        // Words in ordinal order, so symbol ids (the tie-break) do not depend on dictionary order.
        var words = new List<(List<int> Symbols, int Count)>();
        foreach (var (word, count) in wordCounts.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var list = new List<int>(word.Length);
            for (int i = 0; i < word.Length;)
            {
                int len = char.IsSurrogatePair(word, i) ? 2 : 1;
                list.Add(Intern(word.Substring(i, len)));
                i += len;
            }
            words.Add((list, count));
        }
        var merges = new List<(string, string)>();
        var counts = new Dictionary<long, long>();
        while (merges.Count < maxMerges)
        {
            counts.Clear();
            foreach (var (list, count) in words)
            {
                for (int i = 0; i + 1 < list.Count; i++)
                {
                    long key = ((long)list[i] << 32) | (uint)list[i + 1];
                    counts[key] = counts.GetValueOrDefault(key) + count;
                }
            }
            if (counts.Count == 0) break;
            long best = -1, bestCount = 0;
            foreach (var (key, count) in counts)
            {
                if (count > bestCount || (count == bestCount && key < best))
                {
                    best = key;
                    bestCount = count;
                }
            }
            int left = (int)(best >> 32), right = (int)(best & 0xFFFFFFFF);
            int merged = Intern(symbols[left] + symbols[right]);
            merges.Add((symbols[left], symbols[right]));
            foreach (var (list, _) in words)
            {
                for (int i = 0; i + 1 < list.Count; i++)
                {
                    if (list[i] == left && list[i + 1] == right)
                    {
                        list[i] = merged;
                        list.RemoveAt(i + 1);
                    }
                }
            }
        }
        return merges;
    }
}
