using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DeepKernels.Model.Tokenization;

/// <summary>
/// Reads a Hugging Face <c>tokenizer.json</c> into the parts of a <see cref="BpeTokenizer"/>.
/// Every problem is a <see cref="TokenizerFormatException"/> (or
/// <see cref="TokenizerNotSupportedException"/>) naming the file and the JSON path.
/// </summary>
internal sealed class TokenizerJsonReader(string source)
{
    public BpeTokenizer Read(string json)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new TokenizerFormatException(source, "$", $"malformed JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Format("$", $"expected a JSON object, got {root.ValueKind}.");
            var normalizer = Optional(root, "normalizer");
            if (normalizer is { } n) throw NotSupported("normalizer", $"normalizer type '{TypeOf(n, "normalizer")}' (only null is supported).");
            var model = ReadModel(Required(root, "model", "model", JsonValueKind.Object));
            var added = ReadAddedTokens(root);
            var pre = Optional(root, "pre_tokenizer") is { } p ? ReadPreTokenizer(p, "pre_tokenizer") : null;
            var decoderByteLevel = ReadDecoder(root);
            var byId = new Dictionary<int, string>();
            foreach (var (token, id) in model.Vocab) byId[id] = token;
            foreach (var t in added)
            {
                if (byId.TryGetValue(t.Id, out var existing) && existing != t.Content && model.Vocab.ContainsKey(existing))
                    throw Format("added_tokens", $"id {t.Id} is both '{t.Content}' (added) and '{existing}' (model.vocab).");
            }
            var post = Optional(root, "post_processor") is { } pp ? ReadPostProcessor(pp, "post_processor", added, model) : PostProcessor.None;
            return new BpeTokenizer(model, added, pre, post, decoderByteLevel, source);
        }
    }

    private TokenizerFormatException Format(string field, string message) => new(source, field, message);

    private TokenizerNotSupportedException NotSupported(string field, string message) => new(source, field, message);

    private static string Path(string parent, string child) => parent + "." + child;

    private static string Index(string parent, int i) => parent + "[" + i.ToString(CultureInfo.InvariantCulture) + "]";

    private static JsonElement? Optional(JsonElement obj, string name)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v;
    }

    private JsonElement Required(JsonElement obj, string name, string path, JsonValueKind kind)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) throw Format(path, "missing required field.");
        if (v.ValueKind != kind) throw Format(path, $"expected {Describe(kind)}, got {Describe(v.ValueKind)}.");
        return v;
    }

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => kind.ToString().ToLowerInvariant(),
    };

    private string TypeOf(JsonElement obj, string path)
    {
        if (obj.ValueKind != JsonValueKind.Object) throw Format(path, $"expected an object, got {Describe(obj.ValueKind)}.");
        return Required(obj, "type", Path(path, "type"), JsonValueKind.String).GetString()!;
    }

    private bool Bool(JsonElement obj, string name, string path, bool fallback)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Format(Path(path, name), $"expected a boolean, got {Describe(v.ValueKind)}."),
        };
    }

    private string? String(JsonElement obj, string name, string path)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String) throw Format(Path(path, name), $"expected a string, got {Describe(v.ValueKind)}.");
        return v.GetString();
    }

    private int Id(JsonElement v, string path)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int id) || id < 0) throw Format(path, $"expected a non-negative 32-bit integer id, got {v.GetRawText()}.");
        return id;
    }

    private BpeModel ReadModel(JsonElement model)
    {
        string type = String(model, "type", "model") ?? "BPE"; // older files omit the type of a BPE model
        if (type != "BPE") throw NotSupported("model.type", $"model type '{type}' (only BPE is supported).");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind != JsonValueKind.Null && !(dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() == 0))
            throw NotSupported("model.dropout", $"BPE dropout {dropout.GetRawText()} (only null or 0).");
        foreach (string affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (String(model, affix, "model") is { Length: > 0 } value) throw NotSupported(Path("model", affix), $"'{value}' (only null or empty).");
        }
        var vocabJson = Required(model, "vocab", "model.vocab", JsonValueKind.Object);
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var seen = new Dictionary<int, string>();
        foreach (var entry in vocabJson.EnumerateObject())
        {
            int id = Id(entry.Value, $"model.vocab[\"{entry.Name}\"]");
            if (seen.TryGetValue(id, out var other)) throw Format($"model.vocab[\"{entry.Name}\"]", $"id {id} is also used by '{other}'.");
            seen[id] = entry.Name;
            vocab[entry.Name] = id;
        }
        var merges = new List<(string, string)>();
        if (Optional(model, "merges") is { } mergesJson)
        {
            if (mergesJson.ValueKind != JsonValueKind.Array) throw Format("model.merges", $"expected an array, got {Describe(mergesJson.ValueKind)}.");
            int i = 0;
            foreach (var m in mergesJson.EnumerateArray())
            {
                string field = Index("model.merges", i++);
                if (m.ValueKind == JsonValueKind.String)
                {
                    string s = m.GetString()!;
                    int space = s.IndexOf(' ', StringComparison.Ordinal);
                    if (space <= 0 || space == s.Length - 1 || s.IndexOf(' ', space + 1) >= 0) throw Format(field, $"expected \"left right\" (two tokens separated by one space), got \"{s}\".");
                    merges.Add((s[..space], s[(space + 1)..]));
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                {
                    merges.Add((m[0].GetString()!, m[1].GetString()!));
                }
                else throw Format(field, $"expected \"left right\" or [\"left\", \"right\"], got {m.GetRawText()}.");
            }
        }
        return new BpeModel(vocab, merges, String(model, "unk_token", "model"), Bool(model, "byte_fallback", "model", false),
            Bool(model, "ignore_merges", "model", false), Bool(model, "fuse_unk", "model", false), source);
    }

    private List<AddedToken> ReadAddedTokens(JsonElement root)
    {
        var list = new List<AddedToken>();
        if (Optional(root, "added_tokens") is not { } arr) return list;
        if (arr.ValueKind != JsonValueKind.Array) throw Format("added_tokens", $"expected an array, got {Describe(arr.ValueKind)}.");
        var ids = new HashSet<int>();
        int i = 0;
        foreach (var t in arr.EnumerateArray())
        {
            string path = Index("added_tokens", i++);
            if (t.ValueKind != JsonValueKind.Object) throw Format(path, $"expected an object, got {Describe(t.ValueKind)}.");
            int id = Id(Required(t, "id", Path(path, "id"), JsonValueKind.Number), Path(path, "id"));
            string content = Required(t, "content", Path(path, "content"), JsonValueKind.String).GetString()!;
            if (content.Length == 0) throw Format(Path(path, "content"), "an added token cannot be empty.");
            if (!ids.Add(id)) throw Format(Path(path, "id"), $"id {id} appears twice in added_tokens.");
            list.Add(new AddedToken
            {
                Id = id,
                Content = content,
                Special = Bool(t, "special", path, false),
                LStrip = Bool(t, "lstrip", path, false),
                RStrip = Bool(t, "rstrip", path, false),
                SingleWord = Bool(t, "single_word", path, false),
            });
        }
        return list;
    }

    private PreTokenizer ReadPreTokenizer(JsonElement p, string path)
    {
        string type = TypeOf(p, path);
        switch (type)
        {
            case "Sequence":
            {
                var arr = Required(p, "pretokenizers", Path(path, "pretokenizers"), JsonValueKind.Array);
                var steps = new List<PreTokenizer>();
                int i = 0;
                foreach (var s in arr.EnumerateArray()) steps.Add(ReadPreTokenizer(s, Index(Path(path, "pretokenizers"), i++)));
                return new SequencePreTokenizer(steps);
            }
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Bool(p, "add_prefix_space", path, true), Bool(p, "use_regex", path, true));
            case "Split":
            {
                var pattern = Required(p, "pattern", Path(path, "pattern"), JsonValueKind.Object);
                string behaviorName = Required(p, "behavior", Path(path, "behavior"), JsonValueKind.String).GetString()!;
                if (!Enum.TryParse<SplitBehavior>(behaviorName, ignoreCase: false, out var behavior) || !Enum.IsDefined(behavior))
                    throw NotSupported(Path(path, "behavior"), $"split behavior '{behaviorName}' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous).");
                bool invert = Bool(p, "invert", path, false);
                if (String(pattern, "Regex", Path(path, "pattern")) is { } regex)
                {
                    try
                    {
                        return SplitPreTokenizer.FromRegex(regex, behavior, invert);
                    }
                    catch (ArgumentException e)
                    {
                        throw NotSupported(Path(path, "pattern.Regex"), $"the pattern /{regex}/ is not valid as a .NET regular expression: {e.Message}");
                    }
                }
                if (String(pattern, "String", Path(path, "pattern")) is { } literal)
                {
                    if (literal.Length == 0) throw Format(Path(path, "pattern.String"), "the split string cannot be empty.");
                    return SplitPreTokenizer.FromString(literal, behavior, invert);
                }
                throw Format(Path(path, "pattern"), "expected {\"Regex\": \"...\"} or {\"String\": \"...\"}.");
            }
            default:
                throw NotSupported(Path(path, "type"), $"pre-tokenizer type '{type}' (supported: Sequence, Split, ByteLevel).");
        }
    }

    // True when the decoder maps byte-level characters back to bytes.
    private bool ReadDecoder(JsonElement root)
    {
        if (Optional(root, "decoder") is not { } d) throw NotSupported("decoder", "a null decoder (expected ByteLevel, or a Sequence of ByteLevel).");
        return ReadDecoderStep(d, "decoder");
    }

    private bool ReadDecoderStep(JsonElement d, string path)
    {
        string type = TypeOf(d, path);
        switch (type)
        {
            case "ByteLevel":
                return true;
            case "Sequence":
            {
                var arr = Required(d, "decoders", Path(path, "decoders"), JsonValueKind.Array);
                int i = 0;
                bool any = false;
                foreach (var s in arr.EnumerateArray()) any |= ReadDecoderStep(s, Index(Path(path, "decoders"), i++));
                if (!any) throw NotSupported(Path(path, "decoders"), "a decoder Sequence without a ByteLevel step.");
                return true;
            }
            default:
                throw NotSupported(Path(path, "type"), $"decoder type '{type}' (supported: ByteLevel, Sequence of ByteLevel).");
        }
    }

    private PostProcessor ReadPostProcessor(JsonElement p, string path, List<AddedToken> added, BpeModel model)
    {
        string type = TypeOf(p, path);
        switch (type)
        {
            case "ByteLevel":
                return PostProcessor.None;
            case "Sequence":
            {
                var arr = Required(p, "processors", Path(path, "processors"), JsonValueKind.Array);
                var prefix = new List<int>();
                var suffix = new List<int>();
                int i = 0;
                foreach (var s in arr.EnumerateArray())
                {
                    var step = ReadPostProcessor(s, Index(Path(path, "processors"), i++), added, model);
                    prefix.InsertRange(0, step.Prefix); // later processors wrap the result of earlier ones
                    suffix.AddRange(step.Suffix);
                }
                return new PostProcessor { Prefix = prefix, Suffix = suffix };
            }
            case "TemplateProcessing":
                return ReadTemplate(p, path, added, model);
            default:
                throw NotSupported(Path(path, "type"), $"post-processor type '{type}' (supported: TemplateProcessing, ByteLevel, Sequence).");
        }
    }

    private PostProcessor ReadTemplate(JsonElement p, string path, List<AddedToken> added, BpeModel model)
    {
        var single = Required(p, "single", Path(path, "single"), JsonValueKind.Array);
        // special_tokens: name -> ids (the ids written into the sequence).
        var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
        if (Optional(p, "special_tokens") is { } st)
        {
            if (st.ValueKind != JsonValueKind.Object) throw Format(Path(path, "special_tokens"), $"expected an object, got {Describe(st.ValueKind)}.");
            foreach (var e in st.EnumerateObject())
            {
                string ep = $"{path}.special_tokens[\"{e.Name}\"]";
                if (e.Value.ValueKind != JsonValueKind.Object) throw Format(ep, $"expected an object, got {Describe(e.Value.ValueKind)}.");
                var ids = Required(e.Value, "ids", Path(ep, "ids"), JsonValueKind.Array);
                specials[e.Name] = ids.EnumerateArray().Select((v, k) => Id(v, Index(Path(ep, "ids"), k))).ToArray();
            }
        }
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenA = false;
        int i = 0;
        foreach (var piece in single.EnumerateArray())
        {
            string pp = Index(Path(path, "single"), i++);
            if (piece.ValueKind != JsonValueKind.Object) throw Format(pp, $"expected an object, got {Describe(piece.ValueKind)}.");
            if (piece.TryGetProperty("Sequence", out var seq))
            {
                string which = seq.ValueKind == JsonValueKind.Object ? String(seq, "id", Path(pp, "Sequence")) ?? "" : "";
                if (which != "A") throw NotSupported(Path(pp, "Sequence.id"), $"sequence '{which}' in the single template (only A).");
                if (seenA) throw Format(pp, "the single template names sequence A twice.");
                seenA = true;
            }
            else if (piece.TryGetProperty("SpecialToken", out var sp))
            {
                string name = sp.ValueKind == JsonValueKind.Object ? String(sp, "id", Path(pp, "SpecialToken")) ?? "" : "";
                int[] ids;
                if (specials.TryGetValue(name, out var listed)) ids = listed;
                else if (added.FirstOrDefault(t => t.Content == name) is { } a) ids = [a.Id];
                else if (model.Vocab.TryGetValue(name, out int v)) ids = [v];
                else throw Format(Path(pp, "SpecialToken.id"), $"'{name}' is neither in {path}.special_tokens, added_tokens nor model.vocab.");
                (seenA ? suffix : prefix).AddRange(ids);
            }
            else throw Format(pp, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}.");
        }
        if (!seenA) throw Format(Path(path, "single"), "the single template does not contain sequence A.");
        return new PostProcessor { Prefix = prefix, Suffix = suffix };
    }
}
