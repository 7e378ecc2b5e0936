namespace DeepKernels.Model.Tokenization;

/// <summary>
/// One step of pre-tokenization: splits each piece of text into smaller pieces (and may rewrite
/// them, as the byte-level step does). BPE merges never cross piece boundaries.
/// </summary>
public abstract class PreTokenizer
{
    /// <summary>Splits every piece of <paramref name="pieces"/> and returns the new list.</summary>
    public abstract List<string> Split(List<string> pieces);

    /// <summary>Pre-tokenizes one text.</summary>
    public List<string> Split(string text) => Split([text]);
}

/// <summary>Several pre-tokenizers applied in order (<c>"type": "Sequence"</c>).</summary>
public sealed class SequencePreTokenizer(IReadOnlyList<PreTokenizer> steps) : PreTokenizer
{
    /// <summary>The steps in order.</summary>
    public IReadOnlyList<PreTokenizer> Steps { get; } = steps ?? throw new ArgumentNullException(nameof(steps));

    /// <inheritdoc/>
    public override List<string> Split(List<string> pieces)
    {
        foreach (var step in Steps) pieces = step.Split(pieces);
        return pieces;
    }
}
