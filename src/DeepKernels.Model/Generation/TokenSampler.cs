namespace DeepKernels.Model.Generation;

/// <summary>
/// Picks tokens from logits per <see cref="SamplingOptions"/>. One sampler per sequence: it owns
/// that sequence's random stream and reusable buffers, so sampling allocates nothing per token.
/// </summary>
public sealed class TokenSampler
{
    private readonly SamplingOptions _options;
    private readonly DeterministicRandom _random;
    private int[] _order = [];
    private double[] _probs = [];

    /// <summary>A sampler for the sequence with index <paramref name="stream"/> of a batch.</summary>
    public TokenSampler(SamplingOptions options, ulong stream = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _random = new DeterministicRandom(options.Seed, stream);
    }

    /// <summary>Index of the largest logit; ties go to the lower index; NaN never wins.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("Expected at least one logit.", nameof(logits));
        int best = -1;
        float bestValue = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
        {
            if (logits[i] > bestValue || (best < 0 && !float.IsNaN(logits[i])))
            {
                best = i;
                bestValue = logits[i];
            }
        }
        return best < 0 ? 0 : best;
    }

    /// <summary>Chooses the next token from one row of logits.</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("Expected at least one logit.", nameof(logits));
        if (_options.Temperature == 0) return ArgMax(logits);
        int n = logits.Length;
        if (_order.Length != n)
        {
            _order = new int[n];
            _probs = new double[n];
        }
        int count = NucleusCore(logits, _options.Temperature, _options.TopP, _order, _probs);
        double total = 0;
        for (int i = 0; i < count; i++) total += _probs[_order[i]];
        double u = _random.NextDouble() * total;
        double cumulative = 0;
        for (int i = 0; i < count; i++)
        {
            cumulative += _probs[_order[i]];
            if (u < cumulative) return _order[i];
        }
        return _order[count - 1];
    }

    /// <summary>
    /// The nucleus: token ids ordered by probability (descending, ties by id), cut to the smallest
    /// prefix whose probability sum reaches <paramref name="topP"/>. Returns those ids.
    /// </summary>
    public static int[] Nucleus(ReadOnlySpan<float> logits, double temperature, double topP)
    {
        var order = new int[logits.Length];
        var probs = new double[logits.Length];
        int count = NucleusCore(logits, temperature, topP, order, probs);
        return order.AsSpan(0, count).ToArray();
    }

    private static int NucleusCore(ReadOnlySpan<float> logits, double temperature, double topP, int[] order, double[] probs)
    {
        int n = logits.Length;
        double max = double.NegativeInfinity;
        for (int i = 0; i < n; i++)
            if (logits[i] > max) max = logits[i];
        if (double.IsNegativeInfinity(max) || double.IsNaN(max))
            throw new ArgumentException("Expected at least one finite logit to sample from.", nameof(logits));
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            double p = float.IsNaN(logits[i]) ? 0 : Math.Exp((logits[i] - max) / temperature);
            probs[i] = p;
            sum += p;
            order[i] = i;
        }
        for (int i = 0; i < n; i++) probs[i] /= sum;
        if (topP >= 1) return n;
        var p2 = probs;
        Array.Sort(order, (a, b) =>
        {
            int c = p2[b].CompareTo(p2[a]);
            return c != 0 ? c : a.CompareTo(b);
        });
        double cumulative = 0;
        for (int i = 0; i < n; i++)
        {
            cumulative += probs[order[i]];
            if (cumulative >= topP) return i + 1;
        }
        return n;
    }
}
