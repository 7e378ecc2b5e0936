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
        // Pair counts, and for each pair the words that (may) contain it; a merge only revisits those words.
        var merges = new List<(string, string)>();
        var counts = new Dictionary<long, long>();
        var where = new Dictionary<long, HashSet<int>>();
        static long Pair(int left, int right) => ((long)left << 32) | (uint)right;
        void Count(int w, int sign)
        {
            var (list, count) = words[w];
            for (int i = 0; i + 1 < list.Count; i++)
            {
                long key = Pair(list[i], list[i + 1]);
                long c = counts.GetValueOrDefault(key) + sign * (long)count;
                if (c == 0) counts.Remove(key);
                else counts[key] = c;
                if (sign > 0)
                {
                    if (!where.TryGetValue(key, out var set)) where[key] = set = [];
                    set.Add(w);
                }
            }
        }
        for (int w = 0; w < words.Count; w++) Count(w, +1);
        while (merges.Count < maxMerges && counts.Count > 0)
        {
            long best = long.MaxValue, bestCount = 0;
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
            foreach (int w in where[best].Order().ToList())
            {
                var list = words[w].Symbols;
                bool has = false;
                for (int i = 0; i + 1 < list.Count && !has; i++) has = list[i] == left && list[i + 1] == right;
                if (!has) continue;
                Count(w, -1);
                for (int i = 0; i + 1 < list.Count; i++)
                {
                    if (list[i] == left && list[i + 1] == right)
                    {
                        list[i] = merged;
                        list.RemoveAt(i + 1);
                    }
                }
                Count(w, +1);
            }
            where.Remove(best);
        }
        return merges;
    }
}
