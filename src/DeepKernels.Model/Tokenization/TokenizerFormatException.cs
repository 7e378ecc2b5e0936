namespace DeepKernels.Model.Tokenization;

/// <summary>
/// A <c>tokenizer.json</c> that cannot be used: malformed JSON, a missing or mistyped field, a
/// merge that names an unknown token, duplicate ids. The message names the file and the field
/// (a JSON path such as <c>model.merges[12]</c>). This and <see cref="FileNotFoundException"/> are
/// the only exceptions <see cref="BpeTokenizer.Load"/> lets out for bad files.
/// </summary>
public class TokenizerFormatException : IOException
{
    /// <summary>Creates the exception.</summary>
    public TokenizerFormatException(string file, string field, string message, Exception? inner = null)
        : base($"{file}: {field}: {message}", inner)
    {
        File = file;
        Field = field;
    }

    /// <summary>The file (or source name) at fault.</summary>
    public string File { get; }

    /// <summary>The JSON path of the field at fault.</summary>
    public string Field { get; }
}
