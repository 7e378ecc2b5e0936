namespace DeepKernels.Model.Tokenization;

/// <summary>
/// What is added around an encoded single sequence (<c>post_processor</c>): the special-token ids
/// of a <c>TemplateProcessing</c> "single" template before and after the text ($A). A
/// <c>ByteLevel</c> post-processor only adjusts offsets, which this tokenizer does not report, so
/// it adds nothing.
/// </summary>
public sealed record PostProcessor
{
    /// <summary>Adds nothing.</summary>
    public static PostProcessor None { get; } = new();

    /// <summary>Ids put before the text (e.g. BOS).</summary>
    public IReadOnlyList<int> Prefix { get; init; } = [];

    /// <summary>Ids put after the text (e.g. EOS).</summary>
    public IReadOnlyList<int> Suffix { get; init; } = [];
}
