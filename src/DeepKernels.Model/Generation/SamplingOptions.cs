namespace DeepKernels.Model.Generation;

/// <summary>
/// How the next token is chosen. Temperature 0 is greedy (argmax, ties to the lower id);
/// otherwise logits are divided by the temperature, softmaxed in float64, cut to the smallest
/// set of most likely tokens whose probability reaches <see cref="TopP"/> (ties ordered by id),
/// and sampled with a <see cref="DeterministicRandom"/> seeded from <see cref="Seed"/>.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>0 = greedy; otherwise a finite value &gt; 0.</summary>
    public double Temperature { get; init; }

    /// <summary>Nucleus mass in (0, 1]; 1 keeps every token.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampling stream (each prompt of a batch gets its own stream).</summary>
    public ulong Seed { get; init; }

    /// <summary>Most new tokens per prompt.</summary>
    public int MaxNewTokens { get; init; } = 32;

    /// <summary>Generation of a prompt stops after emitting one of these ids (the id is kept in the output).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>Greedy decoding of up to <paramref name="maxNewTokens"/> tokens.</summary>
    public static SamplingOptions Greedy(int maxNewTokens = 32) => new() { MaxNewTokens = maxNewTokens };

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming a bad field.</summary>
    public void Validate()
    {
        if (!double.IsFinite(Temperature) || Temperature < 0)
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Expected a finite temperature >= 0 (0 = greedy).");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "Expected top-p in (0, 1].");
        if (MaxNewTokens < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "Expected max new tokens >= 0.");
    }
}
