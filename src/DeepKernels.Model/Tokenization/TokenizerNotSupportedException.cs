namespace DeepKernels.Model.Tokenization;

/// <summary>
/// A well-formed <c>tokenizer.json</c> that uses a component or option this tokenizer does not
/// implement (a normalizer, a WordPiece model, an unknown pre-tokenizer type, BPE dropout ...).
/// The message names the file, the field and the unsupported value.
/// </summary>
public sealed class TokenizerNotSupportedException : TokenizerFormatException
{
    /// <summary>Creates the exception.</summary>
    public TokenizerNotSupportedException(string file, string field, string message, Exception? inner = null)
        : base(file, field, "not supported: " + message, inner)
    {
    }
}
