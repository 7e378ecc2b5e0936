using System.Text;
using System.Text.RegularExpressions;

namespace DeepKernels.Model.Tokenization;

/// <summary>
/// The byte-level step (<c>"type": "ByteLevel"</c>): optionally prefixes a space, optionally
/// splits with the GPT-2 pattern, then rewrites every piece as its UTF-8 bytes in the
/// <see cref="ByteLevelAlphabet"/>.
/// </summary>
public sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    /// <summary>The GPT-2 pre-tokenization pattern (contractions, letters, digits, other, spaces).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly Lazy<SplitPreTokenizer> Gpt2 = new(() => SplitPreTokenizer.FromRegex(Gpt2Pattern, SplitBehavior.Isolated));

    /// <summary>Whether a space is put in front of a piece that does not start with one.</summary>
    public bool AddPrefixSpace { get; } = addPrefixSpace;

    /// <summary>Whether pieces are split with <see cref="Gpt2Pattern"/> first.</summary>
    public bool UseRegex { get; } = useRegex;

    /// <inheritdoc/>
    public override List<string> Split(List<string> pieces)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        if (AddPrefixSpace) pieces = pieces.Select(p => p.StartsWith(' ') ? p : " " + p).ToList();
        if (UseRegex) pieces = Gpt2.Value.Split(pieces);
        var result = new List<string>(pieces.Count);
        foreach (string piece in pieces)
        {
            if (piece.Length > 0) result.Add(ByteLevelAlphabet.Encode(Encoding.UTF8.GetBytes(piece)));
        }
        return result;
    }
}
