using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DeepKernels.Model.Tokenization;

/// <summary>
/// The tokenizer of the built-in tiny model: a byte-level BPE <c>tokenizer.json</c> in the shape
/// DeepSeek-V3 ships (its pre-tokenizer, BOS template, ByteLevel decoder), generated
/// deterministically. Special tokens sit at the config's BOS / EOS ids, the 256 byte tokens take
/// the next free ids, and merges learned by <see cref="BpeTrainer"/> from
/// <see cref="TinyTokenizerCorpus"/> fill the vocabulary; if the text runs out of pairs the last
/// ids become reserved special tokens, so every id of the model decodes.
/// </summary>
public static class TinyTokenizer
{
    /// <summary>Bump when the generated file changes.</summary>
    public const int Version = 1;

    /// <summary>DeepSeek-V3's begin-of-sentence token.</summary>
    public const string BosToken = "<｜begin▁of▁sentence｜>";

    /// <summary>DeepSeek-V3's end-of-sentence token.</summary>
    public const string EosToken = "<｜end▁of▁sentence｜>";

    /// <summary>DeepSeek-V3's pre-tokenizer patterns: digit runs of up to three, CJK/kana runs, then words, punctuation and spaces.</summary>
    public static readonly IReadOnlyList<string> DeepSeekV3Patterns =
    [
        @"\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        @"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ];

    private static readonly ConcurrentDictionary<string, string> Cache = new(StringComparer.Ordinal);

    /// <summary>The DeepSeek-V3 pre-tokenizer (three Isolated splits, then ByteLevel without prefix space or regex).</summary>
    public static PreTokenizer DeepSeekV3PreTokenizer() => new SequencePreTokenizer(
        [.. DeepSeekV3Patterns.Select(p => SplitPreTokenizer.FromRegex(p, SplitBehavior.Isolated)), new ByteLevelPreTokenizer(false, false)]);

    /// <summary>
    /// The tokenizer.json text for a vocabulary of <paramref name="vocabSize"/> ids with BOS at
    /// <paramref name="bosId"/> and EOS at <paramref name="eosId"/> (same inputs, same bytes).
    /// </summary>
    public static string Json(int vocabSize, int bosId, int eosId)
    {
        if (bosId == eosId) throw new ArgumentException($"BOS and EOS need different ids (both {bosId}).", nameof(eosId));
        if (bosId < 0 || bosId >= vocabSize) throw new ArgumentOutOfRangeException(nameof(bosId), bosId, $"Expected an id in [0, {vocabSize}).");
        if (eosId < 0 || eosId >= vocabSize) throw new ArgumentOutOfRangeException(nameof(eosId), eosId, $"Expected an id in [0, {vocabSize}).");
        if (vocabSize < 258) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "Expected at least 258 ids (256 bytes + BOS + EOS).");
        string key = string.Join(",", vocabSize, bosId, eosId);
        return Cache.GetOrAdd(key, _ => Build(vocabSize, bosId, eosId));
    }

    /// <summary>Writes tokenizer.json into <paramref name="directory"/> (through a temporary file, so readers never see half a file).</summary>
    public static void Write(string directory, int vocabSize, int bosId, int eosId)
    {
        string path = Path.Combine(directory, "tokenizer.json");
        string temp = path + ".tmp-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..8];
        File.WriteAllText(temp, Json(vocabSize, bosId, eosId), new UTF8Encoding(false));
        File.Move(temp, path, overwrite: true);
    }

    private static string Build(int vocabSize, int bosId, int eosId)
    {
        // Word counts of the corpus under the real pre-tokenizer.
        var pre = DeepSeekV3PreTokenizer();
        string text = TinyTokenizerCorpus.Text.ReplaceLineEndings("\n");
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string piece in pre.Split(text)) counts[piece] = counts.GetValueOrDefault(piece) + 1;
        // A few KB of text has fewer distinct pairs than the vocabulary wants: add, once each (so they
        // rank after everything the text repeats), the Title Case and UPPER CASE forms of its words
        // and the numbers 0-999, as a real vocabulary would have them.
        string title = CultureInfo.InvariantCulture.TextInfo.ToTitleCase(text);
        string numbers = string.Join(" ", Enumerable.Range(0, 1000).Select(i => i.ToString(CultureInfo.InvariantCulture)));
        foreach (string extra in new[] { title, text.ToUpperInvariant(), numbers })
        {
            foreach (string piece in pre.Split(extra)) counts.TryAdd(piece, 1);
        }
        var merges = BpeTrainer.Train(counts, vocabSize - 258);

        var vocab = new List<(string Token, int Id)>();
        int next = 0;
        int NextId()
        {
            while (next == bosId || next == eosId) next++;
            return next++;
        }
        for (int b = 0; b < 256; b++) vocab.Add((ByteLevelAlphabet.ToChar((byte)b).ToString(), NextId()));
        var known = new HashSet<string>(vocab.Select(v => v.Token), StringComparer.Ordinal);
        foreach (var (l, r) in merges)
        {
            if (known.Add(l + r)) vocab.Add((l + r, NextId())); // two merges can spell the same token
        }
        var reserved = new List<(string, int)>();
        for (int i = 0; vocab.Count + reserved.Count + 2 < vocabSize; i++) reserved.Add(($"<｜reserved_token_{i}｜>", NextId()));
        var specials = new List<(string Content, int Id)> { (BosToken, bosId), (EosToken, eosId) };
        specials.AddRange(reserved);
        specials.Sort((a, b) => a.Id.CompareTo(b.Id));

        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (var (content, id) in specials)
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", content);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", true);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("pretokenizers");
            foreach (string pattern in DeepSeekV3Patterns)
            {
                w.WriteStartObject();
                w.WriteString("type", "Split");
                w.WriteStartObject("pattern");
                w.WriteString("Regex", pattern);
                w.WriteEndObject();
                w.WriteString("behavior", "Isolated");
                w.WriteBoolean("invert", false);
                w.WriteEndObject();
            }
            w.WriteStartObject();
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", false);
            w.WriteBoolean("trim_offsets", true);
            w.WriteBoolean("use_regex", false);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteStartObject("post_processor");
            w.WriteString("type", "TemplateProcessing");
            w.WriteStartArray("single");
            w.WriteStartObject();
            w.WriteStartObject("SpecialToken");
            w.WriteString("id", BosToken);
            w.WriteNumber("type_id", 0);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteStartObject();
            w.WriteStartObject("Sequence");
            w.WriteString("id", "A");
            w.WriteNumber("type_id", 0);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteStartObject("special_tokens");
            w.WriteStartObject(BosToken);
            w.WriteString("id", BosToken);
            w.WriteStartArray("ids");
            w.WriteNumberValue(bosId);
            w.WriteEndArray();
            w.WriteStartArray("tokens");
            w.WriteStringValue(BosToken);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteStartObject("decoder");
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", true);
            w.WriteBoolean("trim_offsets", true);
            w.WriteBoolean("use_regex", true);
            w.WriteEndObject();
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteNull("continuing_subword_prefix");
            w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteStartObject("vocab");
            w.WriteNumber(BosToken, bosId);
            w.WriteNumber(EosToken, eosId);
            foreach (var (token, id) in vocab) w.WriteNumber(token, id);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (l, r) in merges) w.WriteStringValue(l + " " + r);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }
}
