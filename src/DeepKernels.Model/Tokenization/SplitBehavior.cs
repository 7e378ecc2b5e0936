namespace DeepKernels.Model.Tokenization;

/// <summary>What a <see cref="SplitPreTokenizer"/> does with the parts its pattern matches (the delimiters).</summary>
public enum SplitBehavior
{
    /// <summary>Delimiters are dropped.</summary>
    Removed,

    /// <summary>Delimiters and the text between them each become a piece.</summary>
    Isolated,

    /// <summary>A delimiter is appended to the piece before it.</summary>
    MergedWithPrevious,

    /// <summary>A delimiter is prepended to the piece after it.</summary>
    MergedWithNext,

    /// <summary>Runs of adjacent delimiters become one piece.</summary>
    Contiguous,
}
