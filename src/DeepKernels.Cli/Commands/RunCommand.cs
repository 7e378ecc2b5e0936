using System.Diagnostics;
using System.Globalization;
using DeepKernels.Backends;
using DeepKernels.Model;
using DeepKernels.Model.Generation;
using DeepKernels.Model.Presets;
using DeepKernels.Model.Tokenization;
using DeepKernels.Model.Weights;
using DeepKernels.Tensors;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `deepkernels run`: the main job. Loads a DeepSeek-V3-architecture checkpoint (by default the
/// built-in tiny preset, written once to the cache directory), prefills a prompt (text through the
/// checkpoint's tokenizer.json, or token ids), decodes, prints the generated ids and text, and
/// reports weights, KV cache size, throughput and the bandwidth bound.
/// </summary>
internal sealed class RunCommand : ICliCommand
{
    /// <summary>The fixed prompt used when none is given (token ids; taken modulo the vocabulary).</summary>
    internal static readonly int[] DefaultPrompt = [0, 17, 42, 99, 314, 512, 777, 1000, 1234, 1500, 1789, 2000, 31, 64, 128, 256];

    /// <summary>The text prompt used when none is given and the model has a tokenizer.json.</summary>
    internal const string DefaultTextPrompt = "The old harbour town wakes early, and the market is";

    public string Name => "run";

    public string Summary => "Generate with a DeepSeek-V3-architecture model (default: built-in tiny FP8 preset). Options: --model DIR --backend cpu|cuda|cuda-emu|auto --max-tokens N --temperature T --top-p P --seed S --batch B --prompt-ids 1,2,3 --prompt TEXT --quantize-lm-head --cache-dir DIR";

    public int Run(CliArguments args, TextWriter output)
    {
        string? modelDir = args.String("model");
        string backendName = args.String("backend", "auto");
        int maxTokens = args.Int("max-tokens", 32, 0, 1 << 20);
        double temperature = args.Double("temperature", 0, 0, 100);
        double topP = args.Double("top-p", 1, 1e-9, 1);
        int seed = args.Int("seed", 0, 0);
        int batch = args.Int("batch", 1, 1, 256);
        string? promptIds = args.String("prompt-ids");
        string? promptText = args.String("prompt");
        bool quantizeHead = args.Flag("quantize-lm-head");
        string? cacheDir = args.String("cache-dir");
        args.EnsureAllUsed();
        if (promptIds is not null && promptText is not null) throw new CliUsageException("Give either --prompt or --prompt-ids, not both.");

        new InfoCommand().Run(new CliArguments([]), output);
        output.WriteLine();
        bool interactive = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;

        using var backend = BackendFactory.Create(backendName);
        Backend modelBackend = backend;
        CpuFallback? fallback = null;
        if (backend.MemoryLocation != MemoryLocation.Host)
        {
            if (backendName != "auto")
                throw new NotSupportedException($"Backend '{backend.Name}' is available, but the model graph runs on host-memory backends only for now; use --backend cpu (or auto).");
            fallback = new CpuFallback();
            modelBackend = fallback.Backend;
            output.WriteLine($"note: backend '{backend.Name}' is ready, but the model graph runs on the CPU backend for now.");
        }
        using var _ = fallback;

        var total = Stopwatch.StartNew();
        if (modelDir is null)
        {
            output.Write("model    : built-in tiny DeepSeek-V3 preset ... ");
            var sw = Stopwatch.StartNew();
            modelDir = TinyPreset.EnsureCheckpoint(out bool created, cacheDir);
            output.WriteLine(created ? $"written to {modelDir} in {sw.Elapsed.TotalSeconds:F2} s" : $"cached at {modelDir}");
        }
        else output.WriteLine($"model    : {modelDir}");

        string tokenizerPath = Path.Combine(modelDir, "tokenizer.json");
        if (promptText is not null && !File.Exists(tokenizerPath))
            throw new CliUsageException($"--prompt needs a tokenizer.json in {modelDir}, and there is none. Pass token ids with --prompt-ids 1,2,3 (generated ids are printed).");
        BpeTokenizer? tokenizer = null;
        try
        {
            if (File.Exists(tokenizerPath)) tokenizer = BpeTokenizer.Load(tokenizerPath);
        }
        catch (TokenizerFormatException e) when (promptText is null)
        {
            output.WriteLine($"tokenizer: not usable, printing ids only ({e.Message})");
        }
        if (promptIds is null && promptText is null && tokenizer is not null) promptText = DefaultTextPrompt;
        if (tokenizer is not null) output.WriteLine($"tokenizer: {tokenizerPath} (byte-level BPE, {tokenizer.VocabSize} ids, {tokenizer.Model.MergeCount} merges)");

        var load = Stopwatch.StartNew();
        var progress = new ProgressLine(output, interactive);
        using var model = DeepSeekV3Model.Load(modelDir, modelBackend, new LoadOptions
        {
            QuantizeLmHead = quantizeHead,
            Progress = (done, all, what) => progress.Report("loading ", done, all, what),
        });
        progress.Finish($"loaded {model.Config.NumHiddenLayers} layers in {load.Elapsed.TotalSeconds:F2} s" +
            (model.Weights.SkippedMtpTensors > 0 ? $" (skipped {model.Weights.SkippedMtpTensors} MTP-layer tensors)" : ""));

        var c = model.Config;
        int[] basePrompt = promptText is not null ? EncodePrompt(tokenizer!, promptText, c.VocabSize)
            : promptIds is null ? DefaultPrompt.Select(t => t % c.VocabSize).ToArray() : ParseIds(promptIds, c.VocabSize);
        // A batch of id prompts gets prompts of different lengths: prompt i drops i % 4 leading tokens and shifts ids by 7*i.
        // A text prompt is given to every batch entry as is (each entry samples from its own stream).
        var prompts = Enumerable.Range(0, batch).Select(i => promptText is not null ? basePrompt :
            basePrompt.Skip(Math.Min(i % 4, basePrompt.Length - 1)).Select(t => (t + 7 * i) % c.VocabSize).ToArray()).ToList();
        var options = new SamplingOptions
        {
            Temperature = temperature,
            TopP = topP,
            Seed = (ulong)seed,
            MaxNewTokens = maxTokens,
            EosTokenIds = c.EosTokenIds,
        };

        double bandwidth = MeasureCopyBandwidth();
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var wall = Stopwatch.StartNew();
        var result = Generator.Generate(model, prompts, options, onStep: (done, all) => progress.Report("decoding ", done, all, ""));
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds, wallSeconds = wall.Elapsed.TotalSeconds;
        progress.Finish($"generated {result.Tokens.Sum(t => t.Length)} tokens for {batch} prompt(s)");

        var w = model.Weights;
        int layers = c.NumHiddenLayers;
        long mlaPerToken = (long)layers * c.LatentCacheDim * 2;
        long mhaPerToken = (long)layers * c.MhaCacheValuesPerToken * 2;
        output.WriteLine();
        output.WriteLine($"backend  : {modelBackend.Name} ({Environment.ProcessorCount} cores)");
        output.WriteLine($"arch     : hidden {c.HiddenSize}, {layers} layers ({c.FirstKDenseReplace} dense), {c.NumAttentionHeads} heads, MLA {c.KvLoraRank}+{c.QkRopeHeadDim}, " +
            $"{c.NRoutedExperts} experts top-{c.NumExpertsPerTok} of {c.NGroup} groups keep {c.TopkGroup}, {c.NSharedExperts} shared, vocab {c.VocabSize}");
        output.WriteLine($"weights  : {Mb(w.Bytes)} as loaded (FP8 + scales, BF16 embeddings/norms/head) vs {Mb(w.Bf16Bytes)} in BF16 ({(double)w.Bf16Bytes / w.Bytes:F2}x smaller)");
        output.WriteLine($"KV cache : {mlaPerToken} B/token over {layers} layers (MLA latent {c.LatentCacheDim} BF16 values/layer) vs {mhaPerToken} B/token for MHA ({(double)mhaPerToken / mlaPerToken:F1}x smaller)");
        for (int i = 0; i < Math.Min(batch, 4); i++)
        {
            var toks = result.Tokens[i];
            output.WriteLine($"prompt {i} : [{string.Join(",", prompts[i])}] ({prompts[i].Length} ids)");
            output.WriteLine($"output {i} : [{string.Join(",", toks.Take(48))}{(toks.Length > 48 ? ",..." : "")}] ({toks.Length} ids, {(result.FinishReasons[i] == FinishReason.EndOfSequence ? "stopped at eos" : "length limit")}{(tokenizer is null ? "; no tokenizer: ids only" : "")})");
            if (tokenizer is not null)
            {
                output.WriteLine($"text {i}   : \"{Printable(DecodeStreaming(tokenizer, prompts[i], skipSpecial: true))}\" -> \"{Printable(DecodeStreaming(tokenizer, toks, skipSpecial: true))}\"");
            }
        }
        if (tokenizer is not null && args.String("model") is null)
            output.WriteLine("           (the tiny preset has random weights: the generated text is gibberish by design)");
        if (batch > 4) output.WriteLine($"           ... {batch - 4} more prompt(s)");
        double prefillTps = result.PrefillTokens / Math.Max(1e-9, result.PrefillTime.TotalSeconds);
        output.WriteLine($"prefill  : {result.PrefillTokens} tokens in {result.PrefillTime.TotalMilliseconds:F1} ms = {prefillTps:F1} tokens/s");
        if (result.DecodeSteps > 0)
        {
            double stepSeconds = result.DecodeTime.TotalSeconds / result.DecodeSteps;
            double decodeTps = result.DecodeTokens / Math.Max(1e-9, result.DecodeTime.TotalSeconds);
            double boundSeconds = w.ActiveBytesPerToken / bandwidth;
            output.WriteLine($"decode   : {result.DecodeTokens} tokens in {result.DecodeSteps} steps, {result.DecodeTime.TotalMilliseconds:F1} ms = {decodeTps:F1} tokens/s ({stepSeconds * 1e3:F2} ms/step)");
            output.WriteLine($"bound    : {Mb(w.ActiveBytesPerToken)} of active weights per step / {bandwidth / 1e9:F1} GB/s measured copy bandwidth = {boundSeconds * 1e3:F3} ms/step; " +
                $"decode runs at {100 * boundSeconds / stepSeconds:F1}% of the memory-bandwidth bound");
            var counts = result.PoolAllocationsPerStep;
            output.WriteLine($"memory   : workspace pool allocations {counts[0]} after the first decode step, {counts[^1]} after the last ({(counts[^1] == counts[0] ? "flat" : "growing")}); KV cache {mlaPerToken} B per token, {Mb(result.PrefillTokens * mlaPerToken + result.DecodeTokens * mlaPerToken)} used");
        }
        output.WriteLine($"cpu      : generation used {cpuSeconds:F2} s of CPU in {wallSeconds:F2} s wall = {cpuSeconds / Math.Max(1e-9, wallSeconds):F2} of {Environment.ProcessorCount} cores" +
            (cpuSeconds / Math.Max(1e-9, wallSeconds) < 0.5 * Environment.ProcessorCount ? " (other processes compete for the CPU: rates above are pessimistic)" : ""));
        output.WriteLine($"total    : {total.Elapsed.TotalSeconds:F2} s");
        return 0;
    }

    private static string Mb(long bytes) => (bytes / 1e6).ToString("F2", CultureInfo.InvariantCulture) + " MB";

    /// <summary>Encodes a text prompt (with the tokenizer's BOS template); every id must fit the model.</summary>
    internal static int[] EncodePrompt(BpeTokenizer tokenizer, string text, int vocab)
    {
        var ids = tokenizer.Encode(text);
        if (ids.Length == 0) throw new CliUsageException("--prompt gave no tokens; give some text.");
        int bad = Array.FindIndex(ids, t => t >= vocab);
        if (bad >= 0) throw new CliUsageException($"--prompt: the tokenizer gave id {ids[bad]}, outside the model's vocabulary [0, {vocab}).");
        return ids;
    }

    /// <summary>
    /// Decodes ids token by token through the streaming decoder (the path a live display uses);
    /// ids the tokenizer does not know (a model vocabulary larger than the tokenizer's) show as &lt;id&gt;.
    /// </summary>
    internal static string DecodeStreaming(BpeTokenizer tokenizer, IEnumerable<int> ids, bool skipSpecial)
    {
        var decoder = tokenizer.CreateStreamDecoder(skipSpecial);
        var text = new System.Text.StringBuilder();
        foreach (int id in ids)
        {
            if (tokenizer.IsValidId(id)) text.Append(decoder.Append(id));
            else text.Append(decoder.Flush()).Append('<').Append(id).Append('>');
        }
        return text.Append(decoder.Flush()).ToString();
    }

    /// <summary>Text on one report line: control characters escaped.</summary>
    internal static string Printable(string text)
    {
        var sb = new System.Text.StringBuilder(text.Length);
        foreach (char ch in text)
        {
            switch (ch)
            {
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                default:
                    if (char.IsControl(ch)) sb.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(ch);
                    break;
            }
        }
        return sb.ToString();
    }

    internal static int[] ParseIds(string text, int vocab)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new CliUsageException("--prompt-ids needs at least one id, e.g. --prompt-ids 1,2,3.");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out ids[i]) || ids[i] < 0 || ids[i] >= vocab)
                throw new CliUsageException($"--prompt-ids: '{parts[i]}' is not a token id in [0, {vocab}).");
        }
        return ids;
    }

    /// <summary>Host memcpy bandwidth (read + write bytes per second) over buffers larger than the caches; ~0.1 s.</summary>
    internal static double MeasureCopyBandwidth()
    {
        const int bytes = 64 << 20;
        var a = GC.AllocateUninitializedArray<byte>(bytes);
        var b = GC.AllocateUninitializedArray<byte>(bytes);
        a.AsSpan().Fill(1);
        b.AsSpan().Clear();
        double best = double.MaxValue;
        for (int i = 0; i < 4; i++)
        {
            var sw = Stopwatch.StartNew();
            a.AsSpan().CopyTo(b);
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * bytes / best;
    }

    /// <summary>A CPU backend used when the requested one keeps tensors on a device.</summary>
    private sealed class CpuFallback : IDisposable
    {
        public Backend Backend { get; } = BackendFactory.Create("cpu");

        public void Dispose() => Backend.Dispose();
    }

    /// <summary>A one-line progress bar: redrawn in place on a terminal, a single summary line otherwise.</summary>
    private sealed class ProgressLine(TextWriter output, bool interactive)
    {
        private string _last = "";

        public void Report(string label, int done, int all, string what)
        {
            if (!interactive) return;
            const int width = 30;
            int filled = all == 0 ? width : (int)((long)width * Math.Min(done, all) / all);
            string line = $"\r{label}[{new string('#', filled)}{new string('.', width - filled)}] {done}/{all} {what}";
            if (line == _last) return;
            _last = line;
            output.Write(line.PadRight(78));
            output.Flush();
        }

        public void Finish(string message)
        {
            if (interactive) output.Write("\r" + new string(' ', 78) + "\r");
            output.WriteLine(message);
            _last = "";
        }
    }
}
