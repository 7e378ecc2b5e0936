namespace DeepKernels.Model.Tokenization;

/// <summary>
/// Finds added tokens in a text: scanning left to right, at each position the longest token that
/// matches (and satisfies its single-word rule) wins. Splits the text into plain segments and
/// token ids.
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, AddedToken[]> _byFirstChar;

    public AddedTokenMatcher(IEnumerable<AddedToken> tokens)
    {
        _byFirstChar = tokens.Where(t => t.Content.Length > 0)
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ThenBy(t => t.Id).ToArray());
    }

    /// <summary>Segments of <paramref name="text"/>: (text, -1) for plain text, (null, id) for a matched token.</summary>
    public List<(string? Text, int Id)> Split(string text)
    {
        var result = new List<(string? Text, int Id)>();
        if (_byFirstChar.Count == 0)
        {
            result.Add((text, -1));
            return result;
        }
        int plainStart = 0;
        for (int i = 0; i < text.Length;)
        {
            AddedToken? hit = null;
            if (_byFirstChar.TryGetValue(text[i], out var candidates))
            {
                foreach (var t in candidates)
                {
                    if (text.Length - i >= t.Content.Length && string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) == 0
                        && (!t.SingleWord || IsWordBoundary(text, i, i + t.Content.Length)))
                    {
                        hit = t;
                        break;
                    }
                }
            }
            if (hit is null)
            {
                i++;
                continue;
            }
            int start = i, end = i + hit.Content.Length;
            if (hit.LStrip)
            {
                while (start > plainStart && char.IsWhiteSpace(text[start - 1])) start--;
            }
            if (hit.RStrip)
            {
                while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            }
            if (start > plainStart) result.Add((text[plainStart..start], -1));
            result.Add((null, hit.Id));
            plainStart = i = end;
        }
        if (plainStart < text.Length) result.Add((text[plainStart..], -1));
        return result;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    private static bool IsWordBoundary(string text, int start, int end) =>
        (start == 0 || !IsWordChar(text[start - 1])) && (end == text.Length || !IsWordChar(text[end]));
}
