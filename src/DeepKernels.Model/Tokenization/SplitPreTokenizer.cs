using System.Text.RegularExpressions;

namespace DeepKernels.Model.Tokenization;

/// <summary>
/// Splits pieces at the matches of a pattern (<c>"type": "Split"</c>). With
/// <see cref="Invert"/> the matches are the pieces to keep and the text between them plays the
/// delimiter. Zero-length matches are ignored.
/// </summary>
/// <remarks>
/// .NET regular expressions work on UTF-16 code units, so characters outside the Basic
/// Multilingual Plane (emoji, rare CJK) are seen as two surrogates of category Cs rather than as
/// one letter or symbol. Piece boundaries are never placed inside a surrogate pair (a boundary
/// that would be is moved past the pair), so text always round-trips; the exact pieces of such
/// characters can differ from the Rust reference implementation.
/// </remarks>
public sealed class SplitPreTokenizer : PreTokenizer
{
    /// <summary>Matching gives up after this long on one piece (pathological patterns).</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Creates a splitter for a compiled pattern.</summary>
    public SplitPreTokenizer(Regex pattern, SplitBehavior behavior, bool invert)
    {
        Pattern = pattern ?? throw new ArgumentNullException(nameof(pattern));
        Behavior = behavior;
        Invert = invert;
    }

    /// <summary>Creates a splitter for a regular expression (compiled, with <see cref="MatchTimeout"/>).</summary>
    public static SplitPreTokenizer FromRegex(string pattern, SplitBehavior behavior, bool invert = false) =>
        new(new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant, MatchTimeout), behavior, invert);

    /// <summary>Creates a splitter for a literal string.</summary>
    public static SplitPreTokenizer FromString(string literal, SplitBehavior behavior, bool invert = false) =>
        FromRegex(Regex.Escape(literal), behavior, invert);

    /// <summary>The pattern.</summary>
    public Regex Pattern { get; }

    /// <summary>What happens to delimiters.</summary>
    public SplitBehavior Behavior { get; }

    /// <summary>Whether the matches are the pieces rather than the delimiters.</summary>
    public bool Invert { get; }

    /// <inheritdoc/>
    public override List<string> Split(List<string> pieces)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        var result = new List<string>(pieces.Count * 2);
        var segments = new List<(int Start, int End, bool Delimiter)>();
        foreach (string piece in pieces)
        {
            segments.Clear();
            try
            {
                Segment(piece, segments);
            }
            catch (RegexMatchTimeoutException e)
            {
                throw new InvalidOperationException($"The pre-tokenizer pattern /{Pattern}/ took longer than {MatchTimeout.TotalSeconds:F0} s on a piece of {piece.Length} characters.", e);
            }
            Apply(piece, segments, result);
        }
        return result;
    }

    // Covers the piece with (start, end, is-delimiter) segments, boundaries kept off surrogate pairs.
    private void Segment(string text, List<(int Start, int End, bool Delimiter)> segments)
    {
        int position = 0;
        for (var m = Pattern.Match(text); m.Success; m = m.NextMatch())
        {
            int start = Fix(text, m.Index), end = Fix(text, m.Index + m.Length);
            if (start < position) start = position;
            if (end <= start) continue;
            if (start > position) segments.Add((position, start, Invert));
            segments.Add((start, end, !Invert));
            position = end;
        }
        if (position < text.Length) segments.Add((position, text.Length, Invert));
    }

    private static int Fix(string text, int boundary) =>
        boundary > 0 && boundary < text.Length && char.IsHighSurrogate(text[boundary - 1]) && char.IsLowSurrogate(text[boundary]) ? boundary + 1 : boundary;

    private void Apply(string text, List<(int Start, int End, bool Delimiter)> segments, List<string> result)
    {
        switch (Behavior)
        {
            case SplitBehavior.Removed:
                foreach (var s in segments)
                {
                    if (!s.Delimiter) result.Add(text[s.Start..s.End]);
                }
                break;
            case SplitBehavior.Isolated:
                foreach (var s in segments) result.Add(text[s.Start..s.End]);
                break;
            case SplitBehavior.Contiguous:
                for (int i = 0; i < segments.Count; i++)
                {
                    int start = segments[i].Start, end = segments[i].End;
                    while (segments[i].Delimiter && i + 1 < segments.Count && segments[i + 1].Delimiter) end = segments[++i].End;
                    result.Add(text[start..end]);
                }
                break;
            case SplitBehavior.MergedWithPrevious:
            {
                // A delimiter joins the non-delimiter piece just before it; one after another delimiter stands alone.
                var merged = new List<(int Start, int End)>();
                bool previousDelimiter = false;
                foreach (var s in segments)
                {
                    if (s.Delimiter && !previousDelimiter && merged.Count > 0) merged[^1] = (merged[^1].Start, s.End);
                    else merged.Add((s.Start, s.End));
                    previousDelimiter = s.Delimiter;
                }
                foreach (var (start, end) in merged) result.Add(text[start..end]);
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                // Mirror image: a delimiter joins the non-delimiter piece just after it.
                var merged = new List<(int Start, int End)>();
                bool nextDelimiter = false;
                for (int i = segments.Count - 1; i >= 0; i--)
                {
                    var s = segments[i];
                    if (s.Delimiter && !nextDelimiter && merged.Count > 0) merged[^1] = (s.Start, merged[^1].End);
                    else merged.Add((s.Start, s.End));
                    nextDelimiter = s.Delimiter;
                }
                for (int i = merged.Count - 1; i >= 0; i--) result.Add(text[merged[i].Start..merged[i].End]);
                break;
            }
            default:
                throw new InvalidOperationException($"Unknown split behavior {Behavior}.");
        }
    }
}
