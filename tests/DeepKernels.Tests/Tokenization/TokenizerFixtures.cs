using System.Text.Json;
using DeepKernels.Model.Tokenization;

namespace DeepKernels.Tests.Tokenization;

/// <summary>Hand-written tokenizer.json fixtures.</summary>
internal static class TokenizerFixtures
{
    /// <summary>
    /// A byte-level tokenizer over the 256 byte tokens (ids 0..255 in byte order) plus the given
    /// merges (ids from 256 on), ByteLevel pre-tokenizer without regex unless given, ByteLevel decoder.
    /// </summary>
    public static string ByteLevel(IEnumerable<string>? merges = null, string? preTokenizer = null, string? addedTokens = null, string? postProcessor = null, bool mergesAsPairs = false)
    {
        var vocab = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
        var mergeList = (merges ?? []).ToList();
        foreach (string m in mergeList)
        {
            string token = m.Replace(" ", "", StringComparison.Ordinal);
            vocab.TryAdd(token, vocab.Count);
        }
        string vocabJson = JsonSerializer.Serialize(vocab);
        string mergesJson = mergesAsPairs
            ? JsonSerializer.Serialize(mergeList.Select(m => m.Split(' ')).ToList())
            : JsonSerializer.Serialize(mergeList);
        return $$"""
            {
              "version": "1.0",
              "added_tokens": {{addedTokens ?? "[]"}},
              "normalizer": null,
              "pre_tokenizer": {{preTokenizer ?? """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}"""}},
              "post_processor": {{postProcessor ?? "null"}},
              "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
              "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                        "fuse_unk": false, "byte_fallback": false, "vocab": {{vocabJson}}, "merges": {{mergesJson}}}
            }
            """;
    }

    /// <summary>The DeepSeek-V3 pre-tokenizer as it appears in its tokenizer.json.</summary>
    public static string DeepSeekV3PreTokenizer()
    {
        var steps = TinyTokenizer.DeepSeekV3Patterns.Select(p =>
            $$"""{"type": "Split", "pattern": {"Regex": {{JsonSerializer.Serialize(p)}}}, "behavior": "Isolated", "invert": false}""").ToList();
        steps.Add("""{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}""");
        return $$"""{"type": "Sequence", "pretokenizers": [{{string.Join(", ", steps)}}]}""";
    }

    public const string Specials = """
        [
          {"id": 300, "content": "<｜begin▁of▁sentence｜>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": true},
          {"id": 301, "content": "<｜end▁of▁sentence｜>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": true},
          {"id": 302, "content": "<tool>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
          {"id": 303, "content": "<tool_call>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ]
        """;

    public const string BosTemplate = """
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<｜begin▁of▁sentence｜>": {"id": "<｜begin▁of▁sentence｜>", "ids": [300], "tokens": ["<｜begin▁of▁sentence｜>"]}}}
        """;

    public static BpeTokenizer Parse(string json) => BpeTokenizer.Parse(json, "fixture.json");

    /// <summary>The byte-level alphabet string of a text (what the vocabulary stores).</summary>
    public static string Bytes(string text) => ByteLevelAlphabet.EncodeText(text);
}
