using System.Diagnostics;

namespace DeepKernels.Model.Generation;

/// <summary>Why a prompt's generation ended.</summary>
public enum FinishReason
{
    /// <summary>An end-of-sequence token was produced.</summary>
    EndOfSequence,

    /// <summary><see cref="SamplingOptions.MaxNewTokens"/> tokens were produced.</summary>
    Length,
}

/// <summary>The outcome of <see cref="Generator.Generate"/>.</summary>
public sealed record GenerationResult
{
    /// <summary>New tokens per prompt (an end-of-sequence token is included).</summary>
    public required IReadOnlyList<int[]> Tokens { get; init; }

    /// <summary>Why each prompt stopped.</summary>
    public required IReadOnlyList<FinishReason> FinishReasons { get; init; }

    /// <summary>Prompt tokens processed by the prefill step.</summary>
    public int PrefillTokens { get; init; }

    /// <summary>Wall time of the prefill step (including sampling the first tokens).</summary>
    public TimeSpan PrefillTime { get; init; }

    /// <summary>Tokens produced by decode steps (after the first token of each prompt).</summary>
    public int DecodeTokens { get; init; }

    /// <summary>Decode steps run (one token per active prompt per step).</summary>
    public int DecodeSteps { get; init; }

    /// <summary>Wall time of all decode steps.</summary>
    public TimeSpan DecodeTime { get; init; }

    /// <summary>Workspace pool allocation count after each decode step (flat once warm).</summary>
    public required IReadOnlyList<long> PoolAllocationsPerStep { get; init; }
}

/// <summary>
/// Batched generation: all prompts (of any lengths) are prefilled in one step, then decoded
/// together one token per step, each with its own sampler stream; a prompt leaves the batch when
/// it produces an end-of-sequence token or reaches the token limit.
/// </summary>
public static class Generator
{
    /// <summary>
    /// Generates for <paramref name="prompts"/>. Prompt i samples from stream
    /// <paramref name="streams"/>[i] (default i), so a prompt run alone with the same stream
    /// produces the same tokens as in the batch. <paramref name="onStep"/> is called after each
    /// step with (tokens produced so far, most tokens possible).
    /// </summary>
    public static GenerationResult Generate(DeepSeekV3Model model, IReadOnlyList<int[]> prompts, SamplingOptions options,
        IReadOnlyList<ulong>? streams = null, Action<int, int>? onStep = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int n = prompts.Count;
        if (n == 0) throw new ArgumentException("Expected at least one prompt.", nameof(prompts));
        if (streams is not null && streams.Count != n) throw new ArgumentException($"Expected {n} sampler streams, got {streams.Count}.", nameof(streams));
        for (int i = 0; i < n; i++)
        {
            if (prompts[i] is not { Length: > 0 }) throw new ArgumentException($"Prompt {i} is empty; every prompt needs at least one token.", nameof(prompts));
        }
        int vocab = model.Config.VocabSize;
        int maxLen = prompts.Max(p => p.Length) + Math.Max(1, options.MaxNewTokens);
        using var session = model.CreateSession(n, maxLen);
        var samplers = Enumerable.Range(0, n).Select(i => new TokenSampler(options, streams?[i] ?? (ulong)i)).ToArray();
        var sequences = Enumerable.Range(0, n).Select(_ => session.CreateSequence()).ToArray();
        var output = Enumerable.Range(0, n).Select(_ => new List<int>()).ToArray();
        var reasons = new FinishReason[n];
        var done = new bool[n];
        var logits = new float[n * vocab];
        var poolCounts = new List<long>();
        int limit = options.MaxNewTokens * n;
        if (options.MaxNewTokens == 0)
            return new GenerationResult { Tokens = output.Select(o => o.ToArray()).ToArray(), FinishReasons = Enumerable.Repeat(FinishReason.Length, n).ToArray(), PoolAllocationsPerStep = poolCounts };

        var sw = Stopwatch.StartNew();
        session.Forward(sequences, prompts, logits);
        for (int i = 0; i < n; i++) Accept(i, samplers[i].Sample(logits.AsSpan(i * vocab, vocab)));
        var prefillTime = sw.Elapsed;
        int produced = n;
        onStep?.Invoke(produced, limit);

        sw.Restart();
        int steps = 0, decodeTokens = 0;
        var active = new List<int>(n);
        var seqs = new List<int>(n);
        var toks = new List<int[]>(n);
        while (true)
        {
            active.Clear();
            seqs.Clear();
            toks.Clear();
            for (int i = 0; i < n; i++)
            {
                if (done[i]) continue;
                active.Add(i);
                seqs.Add(sequences[i]);
                toks.Add([output[i][^1]]);
            }
            if (active.Count == 0) break;
            session.Forward(seqs, toks, logits.AsSpan(0, active.Count * vocab));
            for (int j = 0; j < active.Count; j++) Accept(active[j], samplers[active[j]].Sample(logits.AsSpan(j * vocab, vocab)));
            steps++;
            decodeTokens += active.Count;
            produced += active.Count;
            poolCounts.Add(session.PoolStatistics.AllocationCount + (session.DevicePoolStatistics?.AllocationCount ?? 0));
            onStep?.Invoke(produced, limit);
        }
        var decodeTime = sw.Elapsed;
        return new GenerationResult
        {
            Tokens = output.Select(o => o.ToArray()).ToArray(),
            FinishReasons = reasons,
            PrefillTokens = prompts.Sum(p => p.Length),
            PrefillTime = prefillTime,
            DecodeTokens = decodeTokens,
            DecodeSteps = steps,
            DecodeTime = decodeTime,
            PoolAllocationsPerStep = poolCounts,
        };

        void Accept(int i, int token)
        {
            output[i].Add(token);
            if (options.EosTokenIds.Contains(token))
            {
                done[i] = true;
                reasons[i] = FinishReason.EndOfSequence;
            }
            else if (output[i].Count >= options.MaxNewTokens)
            {
                done[i] = true;
                reasons[i] = FinishReason.Length;
            }
        }
    }
}
