using System.Text;
using DeepKernels.Model.Tokenization;

namespace DeepKernels.Tests.Tokenization;

/// <summary>Malformed and unsupported tokenizer.json files give typed exceptions naming the file and field.</summary>
public class TokenizerFormatTests
{
    private static readonly string Valid = TokenizerFixtures.ByteLevel(["a b"], TokenizerFixtures.DeepSeekV3PreTokenizer(), TokenizerFixtures.Specials, TokenizerFixtures.BosTemplate);

    private static TokenizerFormatException Rejects(string json, string field, string? words = null)
    {
        var e = Assert.Throws(Is.InstanceOf<TokenizerFormatException>(), () => BpeTokenizer.Parse(json, "bad/tokenizer.json")) as TokenizerFormatException;
        Assert.That(e!.Field, Is.EqualTo(field), e.Message);
        Assert.That(e.File, Is.EqualTo("bad/tokenizer.json"));
        Assert.That(e.Message, Does.Contain("bad/tokenizer.json").And.Contain(field));
        if (words is not null) Assert.That(e.Message, Does.Contain(words));
        return e;
    }

    private static string Replace(string from, string to)
    {
        Assert.That(Valid, Does.Contain(from), "fixture text to replace");
        return Valid.Replace(from, to, StringComparison.Ordinal);
    }

    [Test]
    public void TheValidFixtureLoads() => Assert.That(BpeTokenizer.Parse(Valid).Encode("ab"), Is.EqualTo(new[] { 300, 256 }));

    [Test]
    public void MalformedJson()
    {
        Rejects(Valid[..(Valid.Length / 2)], "$", "malformed JSON");
        Rejects("[1, 2]", "$", "object");
        Rejects("", "$");
    }

    [Test]
    public void MissingOrMistypedFields()
    {
        Rejects("{\"decoder\": {\"type\": \"ByteLevel\"}}", "model", "missing");
        Rejects(Replace("\"vocab\": {", "\"vocab_\": {"), "model.vocab", "missing");
        Rejects(Replace("\"merges\": [\"a b\"]", "\"merges\": {\"a\": 1}"), "model.merges", "array");
        Rejects(Replace("\"merges\": [\"a b\"]", "\"merges\": [\"ab\"]"), "model.merges[0]", "two tokens");
        Rejects(Replace("\"merges\": [\"a b\"]", "\"merges\": [[\"a\", 1]]"), "model.merges[0]");
        Rejects(Replace("\"vocab\": {\"\\u0100\":0,", "\"vocab\": {\"\\u0100\":-3,"), "model.vocab[\"Ā\"]", "non-negative");
        Rejects(Replace("\"id\": 301,", "\"id\": \"301\","), "added_tokens[1].id", "number");
        Rejects(Replace("\"id\": 301,", "\"id\": 300,"), "added_tokens[1].id", "twice");
        Rejects(Replace("\"id\": 301,", "\"id\": 97,"), "added_tokens", "both");
        Rejects(Replace("\"behavior\": \"Isolated\"", "\"behaviour\": \"Isolated\""), "pre_tokenizer.pretokenizers[0].behavior", "missing");
        Rejects(Replace("\"type\": \"Split\", \"pattern\": {\"Regex\"", "\"type\": \"Split\", \"pattern\": {\"Regexp\""), "pre_tokenizer.pretokenizers[0].pattern");
        Rejects(Replace("\"single\": [", "\"singular\": ["), "post_processor.single", "missing");
        Rejects(Replace("{\"SpecialToken\": {\"id\": \"<｜begin▁of▁sentence｜>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n",
            "{\"SpecialToken\": {\"id\": \"<nope>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n"), "post_processor.single[0].SpecialToken.id", "<nope>");
    }

    [Test]
    public void MergesNamingUnknownTokens()
    {
        // "a" and "b" exist, but the merge result "ab" is not in the vocabulary.
        string json = Replace("\"merges\": [\"a b\"]", "\"merges\": [\"a b\", \"x yz\"]");
        Rejects(json, "model.merges[1]", "'yz'");
        Rejects(Replace("\"merges\": [\"a b\"]", "\"merges\": [\"a b\", \"b a\"]"), "model.merges[1]", "'ba'");
    }

    [Test]
    public void UnsupportedComponentsAreNamed()
    {
        static void NotSupported(string json, string field, string words)
        {
            var e = Rejects(json, field, words);
            Assert.That(e, Is.InstanceOf<TokenizerNotSupportedException>());
            Assert.That(e.Message, Does.Contain("not supported"));
        }
        NotSupported(Replace("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}"), "normalizer", "NFC");
        NotSupported(Replace("\"type\": \"BPE\"", "\"type\": \"WordPiece\""), "model.type", "WordPiece");
        NotSupported(Replace("\"dropout\": null", "\"dropout\": 0.1"), "model.dropout", "0.1");
        NotSupported(Replace("\"continuing_subword_prefix\": null", "\"continuing_subword_prefix\": \"##\""), "model.continuing_subword_prefix", "##");
        NotSupported(Replace("\"behavior\": \"Isolated\"", "\"behavior\": \"Sideways\""), "pre_tokenizer.pretokenizers[0].behavior", "Sideways");
        NotSupported(Replace("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}", "{\"type\": \"Metaspace\"}"), "pre_tokenizer.pretokenizers[3].type", "Metaspace");
        NotSupported(Replace("\"decoder\": {\"type\": \"ByteLevel\"", "\"decoder\": {\"type\": \"WordPiece\""), "decoder.type", "WordPiece");
        NotSupported(Replace("\"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true}", "\"decoder\": null"), "decoder", "null");
        NotSupported(Replace("\"type\": \"TemplateProcessing\"", "\"type\": \"BertProcessing\""), "post_processor.type", "BertProcessing");
        NotSupported(Replace("{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n \"pair\"", "{\"Sequence\": {\"id\": \"B\", \"type_id\": 0}}],\n \"pair\""), "post_processor.single[1].Sequence.id", "'B'");
        // A pattern .NET cannot compile (possessive quantifier).
        string possessive = Valid.Replace(System.Text.Json.JsonSerializer.Serialize(TinyTokenizer.DeepSeekV3Patterns[0]), "\"\\\\p{N}++\"", StringComparison.Ordinal);
        NotSupported(possessive, "pre_tokenizer.pretokenizers[0].pattern.Regex", "p{N}++");
    }

    [Test]
    public void LoadChecksTheFile()
    {
        string dir = Path.Combine(Path.GetTempPath(), "dk-tok-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "tokenizer.json");
            Assert.Throws<FileNotFoundException>(() => BpeTokenizer.Load(path));
            File.WriteAllBytes(path, [.. Encoding.UTF8.GetBytes("{\"model\": \""), 0xFF, 0xFE, .. Encoding.UTF8.GetBytes("\"}")]);
            var e = Assert.Throws<TokenizerFormatException>(() => BpeTokenizer.Load(path));
            Assert.That(e!.Message, Does.Contain(path).And.Contain("UTF-8"));
            File.WriteAllText(path, Valid);
            Assert.That(BpeTokenizer.Load(path).Source, Is.EqualTo(path));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
