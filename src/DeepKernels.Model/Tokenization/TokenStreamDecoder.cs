using System.Text;

namespace DeepKernels.Model.Tokenization;

/// <summary>
/// Incremental decoding for streamed output. Each <see cref="Append"/> returns the text that the
/// new token completes; bytes of a UTF-8 sequence split across tokens are held back until the
/// sequence is complete (or proves invalid, giving U+FFFD). The concatenation of all returned
/// strings and <see cref="Flush"/> equals <see cref="BpeTokenizer.Decode"/> of the same ids.
/// </summary>
public sealed class TokenStreamDecoder
{
    private readonly BpeTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
    private readonly List<byte> _bytes = new(16);
    private char[] _chars = new char[64];

    internal TokenStreamDecoder(BpeTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>Adds one token; returns the newly completed text (possibly empty).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is not a token.</exception>
    public string Append(int id)
    {
        _bytes.Clear();
        _tokenizer.AppendBytes(id, _skipSpecialTokens, _bytes);
        return Convert(flush: false);
    }

    /// <summary>Ends the stream: returns what was held back (an incomplete sequence becomes U+FFFD).</summary>
    public string Flush()
    {
        _bytes.Clear();
        return Convert(flush: true);
    }

    private string Convert(bool flush)
    {
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_bytes);
        int need = _utf8.GetCharCount(span, flush);
        if (need > _chars.Length) _chars = new char[Math.Max(need, _chars.Length * 2)];
        int n = _utf8.GetChars(span, _chars, flush);
        return new string(_chars, 0, n);
    }
}
