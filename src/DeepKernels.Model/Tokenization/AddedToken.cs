namespace DeepKernels.Model.Tokenization;

/// <summary>
/// A token matched verbatim in the input before pre-tokenization (<c>added_tokens</c>).
/// Special tokens (BOS, EOS, chat markers) can be skipped when decoding.
/// </summary>
public sealed record AddedToken
{
    /// <summary>The token id.</summary>
    public required int Id { get; init; }

    /// <summary>The exact text that is matched.</summary>
    public required string Content { get; init; }

    /// <summary>Whether the token is special (skipped by decode with skipSpecialTokens).</summary>
    public bool Special { get; init; }

    /// <summary>Whether whitespace on its left is absorbed into the token.</summary>
    public bool LStrip { get; init; }

    /// <summary>Whether whitespace on its right is absorbed into the token.</summary>
    public bool RStrip { get; init; }

    /// <summary>Whether it matches only as a whole word (no letter, digit or '_' right next to it).</summary>
    public bool SingleWord { get; init; }
}
