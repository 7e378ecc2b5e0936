using System.Text;
using CsCheck;
using DeepKernels.Model.Tokenization;

namespace DeepKernels.Tests.Tokenization;

/// <summary>Encoding and decoding with hand-written tokenizer.json fixtures.</summary>
public class BpeTokenizerTests
{
    private static int Id(BpeTokenizer t, string text) => t.TokenToId(TokenizerFixtures.Bytes(text)) ?? throw new InvalidOperationException($"no token '{text}'");

    [Test]
    public void LowerRankMergesFirstNotLeftToRight()
    {
        // Greedy left-to-right would take "ab" first and give [ab, c]; rank order gives [a, bc].
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["b c", "a b"]));
        Assert.That(t.Encode("abc"), Is.EqualTo(new[] { 'a', Id(t, "bc") }));
        // With the ranks swapped the answer flips.
        var swapped = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["a b", "b c"]));
        Assert.That(swapped.Encode("abc"), Is.EqualTo(new[] { Id(swapped, "ab"), 'c' }));
    }

    [Test]
    public void MergesBuildOnEarlierMergesAndTiesGoLeft()
    {
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["a a", "aa aa", "h e", "he l", "l o"]));
        Assert.That(t.Encode("aaaaa"), Is.EqualTo(new[] { Id(t, "aaaa"), 'a' }));
        Assert.That(t.Encode("aaa"), Is.EqualTo(new[] { Id(t, "aa"), 'a' }));
        // "he l" (rank 3) beats "l o" (rank 4): [hel, o]; and both merge forms are read the same way.
        Assert.That(t.Encode("helo"), Is.EqualTo(new[] { Id(t, "hel"), 'o' }));
        var pairs = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["a a", "aa aa", "h e", "he l", "l o"], mergesAsPairs: true));
        Assert.That(pairs.Encode("aaaaa helo"), Is.EqualTo(t.Encode("aaaaa helo")));
    }

    [Test]
    public void AllBytesMapToTheirOwnTokenAndBack()
    {
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel());
        var chars = new HashSet<char>();
        for (int b = 0; b < 256; b++)
        {
            char c = ByteLevelAlphabet.ToChar((byte)b);
            Assert.That(chars.Add(c), Is.True, $"byte {b} shares its character");
            Assert.That(char.IsWhiteSpace(c) || char.IsControl(c), Is.False, $"byte {b} maps to a non-printable character U+{(int)c:X4}");
            Assert.That(ByteLevelAlphabet.TryGetByte(c, out byte back) && back == b, Is.True);
            Assert.That(t.Decode([b]), Is.EqualTo(Encoding.UTF8.GetString([(byte)b])));
        }
        Assert.That(ByteLevelAlphabet.ToChar((byte)'A'), Is.EqualTo('A'));
        Assert.That(ByteLevelAlphabet.ToChar((byte)' '), Is.EqualTo('Ġ'));
        Assert.That(ByteLevelAlphabet.ToChar(0), Is.EqualTo('Ā'));
        Assert.That(ByteLevelAlphabet.ToChar((byte)'\n'), Is.EqualTo('Ċ'));
        Assert.That(ByteLevelAlphabet.ToChar(0xAD), Is.EqualTo('Ń'));
        // Without merges every UTF-8 byte of the text is one token, id = byte value.
        string text = "é€😀\r\n";
        Assert.That(t.Encode(text), Is.EqualTo(Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray()));
    }

    private static readonly Gen<string> UnicodeText = Gen.OneOf(
            Gen.Int[0x20, 0x7E], Gen.Int[0x00, 0x1F], Gen.Int[0x300, 0x36F], Gen.Int[0x4E00, 0x9FA5], Gen.Int[0x3040, 0x30FF],
            Gen.Int[0x1F600, 0x1F64F], Gen.Int[0x20000, 0x2A6DF], Gen.Int[0xA0, 0xD7FF], Gen.Const(0x0D), Gen.Const(0x0A), Gen.Const(0x20), Gen.Int['0', '9'])
        .Array[0, 40]
        .Select(cps => string.Concat(cps.Select(char.ConvertFromUtf32)));

    [Test]
    public void RoundTripsRandomUnicodeWithTheDeepSeekPreTokenizer()
    {
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["Ġ t", "h e", "Ġt he", "1 2", "12 3", "ä ¸"], TokenizerFixtures.DeepSeekV3PreTokenizer(), TokenizerFixtures.Specials));
        UnicodeText.Sample(s =>
        {
            var ids = t.Encode(s, addSpecialTokens: false);
            Assert.That(t.Decode(ids), Is.EqualTo(s));
        }, iter: 300);
        foreach (string s in new[] { "The cat\r\n\r\n  sat   on 12345 mats.", "e\u0301\u0302 combining", "日本語のテキスト、カタカナ", "😀👍🏽 family 👨‍👩‍👧", "tabs\tand\u00a0nbsp", "" })
            Assert.That(t.Decode(t.Encode(s, addSpecialTokens: false)), Is.EqualTo(s), s);
    }

    [Test]
    public void DeepSeekPreTokenizerSplitsDigitsCjkPunctuationAndSpaces()
    {
        var pre = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(preTokenizer: TokenizerFixtures.DeepSeekV3PreTokenizer())).PreTokenizer!;
        List<string> Pieces(string s) => pre.Split(s).Select(p => Decode(p)).ToList();
        Assert.That(Pieces("1234"), Is.EqualTo(new[] { "123", "4" }));
        Assert.That(Pieces("x 1234567"), Is.EqualTo(new[] { "x", " ", "123", "456", "7" }));
        Assert.That(Pieces("Hello, world!"), Is.EqualTo(new[] { "Hello", ",", " world", "!" }));
        Assert.That(Pieces("a   b"), Is.EqualTo(new[] { "a", "  ", " b" }));
        Assert.That(Pieces("line1\r\n\nnext"), Is.EqualTo(new[] { "line", "1", "\r\n\n", "next" }));
        Assert.That(Pieces("我爱北京ok"), Is.EqualTo(new[] { "我爱北京", "ok" }));
        Assert.That(Pieces("カタカナとひらがな"), Is.EqualTo(new[] { "カタカナとひらがな" }));
        Assert.That(Pieces("don't .NET"), Is.EqualTo(new[] { "don", "'t", " .", "NET" }));
        Assert.That(Pieces("x+=y;"), Is.EqualTo(new[] { "x", "+=", "y", ";" }));
        // Bytes of a piece are in the byte-level alphabet: " world" starts with Ġ.
        Assert.That(pre.Split("a world")[1], Is.EqualTo("Ġworld"));
    }

    private static string Decode(string byteLevel)
    {
        var bytes = new List<byte>();
        Assert.That(ByteLevelAlphabet.TryDecode(byteLevel, bytes), Is.True);
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    [TestCase(SplitBehavior.Isolated, false, "a|-|b|-|-|c")]
    [TestCase(SplitBehavior.Removed, false, "a|b|c")]
    [TestCase(SplitBehavior.MergedWithPrevious, false, "a-|b-|-|c")]
    [TestCase(SplitBehavior.MergedWithNext, false, "a|-b|-|-c")]
    [TestCase(SplitBehavior.Contiguous, false, "a|-|b|--|c")]
    [TestCase(SplitBehavior.Removed, true, "a|b|c")]
    [TestCase(SplitBehavior.Isolated, true, "a|-|b|--|c")]
    [TestCase(SplitBehavior.MergedWithPrevious, true, "a-|b--|c")]
    [TestCase(SplitBehavior.MergedWithNext, true, "a|-b|--c")]
    public void SplitBehaviors(SplitBehavior behavior, bool invert, string expected)
    {
        // Invert: the matches (single letters) are the pieces, the dashes between them the delimiters.
        var split = invert ? SplitPreTokenizer.FromRegex("[a-z]", behavior, invert: true) : SplitPreTokenizer.FromString("-", behavior);
        Assert.That(string.Join("|", split.Split("a-b--c")), Is.EqualTo(expected));
    }

    [Test]
    public void ContiguousJoinsRunsOfDelimitersIntoOnePiece()
    {
        Assert.That(string.Join("|", SplitPreTokenizer.FromRegex("-", SplitBehavior.Contiguous).Split("a-b---c-")), Is.EqualTo("a|-|b|---|c|-"));
        Assert.That(string.Join("|", SplitPreTokenizer.FromRegex("-", SplitBehavior.Isolated).Split("a-b---c-")), Is.EqualTo("a|-|b|-|-|-|c|-"));
    }

    [Test]
    public void ByteLevelWithRegexAndPrefixSpaceUsesTheGpt2Pattern()
    {
        var pre = new ByteLevelPreTokenizer(addPrefixSpace: true, useRegex: true);
        Assert.That(pre.Split("Hello world's 42!!").Select(Decode), Is.EqualTo(new[] { " Hello", " world", "'s", " 42", "!!" }));
        Assert.That(new ByteLevelPreTokenizer(false, false).Split("a b").Select(Decode), Is.EqualTo(new[] { "a b" }));
    }

    [Test]
    public void SurrogatePairsAreNeverSplitAcrossPieces()
    {
        // In UTF-16 regex terms, "[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+" would start a match at the low surrogate of 😀.
        var pre = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(preTokenizer: TokenizerFixtures.DeepSeekV3PreTokenizer())).PreTokenizer!;
        var pieces = pre.Split("😀abc𠀀x").Select(Decode).ToList();
        Assert.That(string.Concat(pieces), Is.EqualTo("😀abc𠀀x"));
        Assert.That(pieces.All(p => !p.Contains('\uFFFD', StringComparison.Ordinal)), Is.True, string.Join("|", pieces));
    }

    [Test]
    public void AddedTokensAreMatchedFirstLongestFirst()
    {
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["Ġ t"], TokenizerFixtures.DeepSeekV3PreTokenizer(), TokenizerFixtures.Specials));
        var ids = t.Encode("a<tool_call> t<tool><｜end▁of▁sentence｜>", addSpecialTokens: false);
        Assert.That(ids, Is.EqualTo(new[] { 'a', 303, Id(t, " t"), 302, 301 }));
        Assert.That(t.Decode(ids), Is.EqualTo("a<tool_call> t<tool><｜end▁of▁sentence｜>"));
        // Special tokens are dropped on request; normal added tokens stay.
        Assert.That(t.Decode(ids, skipSpecialTokens: true), Is.EqualTo("a t<tool>"));
        // A partial special token is plain text.
        Assert.That(t.Encode("<tool_cal", addSpecialTokens: false), Is.EqualTo(Encoding.UTF8.GetBytes("<tool_cal").Select(b => (int)b).ToArray()));
        Assert.That(t.IsSpecial(301) && !t.IsSpecial(302), Is.True);
    }

    [Test]
    public void AddedTokensDecodeThroughTheByteLevelDecoder()
    {
        // Content made of byte-alphabet characters is mapped back to bytes ("Ġhi" is " hi"); other content is taken as text.
        const string added = """[{"id": 300, "content": "Ġhi", "special": false}, {"id": 301, "content": "<｜x｜>", "special": true}]""";
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(addedTokens: added));
        Assert.That(t.Encode("aĠhi<｜x｜>", false), Is.EqualTo(new[] { 'a', 300, 301 }));
        Assert.That(t.Decode([97, 300, 301]), Is.EqualTo("a hi<｜x｜>"));
        Assert.That(t.Decode([97, 300, 301], skipSpecialTokens: true), Is.EqualTo("a hi"));
    }

    [Test]
    public void AddedTokenStripAndSingleWordOptions()
    {
        const string added = """
            [{"id": 300, "content": "<m>", "lstrip": true, "rstrip": true, "special": true},
             {"id": 301, "content": "cat", "single_word": true, "special": false}]
            """;
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(addedTokens: added));
        Assert.That(t.Encode("a  <m>  b", false), Is.EqualTo(new[] { 'a', 300, 'b' }));
        Assert.That(t.Encode("cat", false), Is.EqualTo(new[] { 301 }));
        Assert.That(t.Encode("a cat.", false), Is.EqualTo(new[] { 'a', ' ', 301, '.' }));
        Assert.That(t.Encode("cats", false), Is.EqualTo(new[] { 'c', 'a', 't', 's' }));
    }

    [Test]
    public void TheTemplatePostProcessorAddsBos()
    {
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(preTokenizer: TokenizerFixtures.DeepSeekV3PreTokenizer(), addedTokens: TokenizerFixtures.Specials, postProcessor: TokenizerFixtures.BosTemplate));
        Assert.That(t.Encode("hi"), Is.EqualTo(new[] { 300, 'h', 'i' }));
        Assert.That(t.Encode("hi", addSpecialTokens: false), Is.EqualTo(new[] { (int)'h', 'i' }));
        Assert.That(t.Encode(""), Is.EqualTo(new[] { 300 }));
        Assert.That(t.Decode(t.Encode("hi")), Is.EqualTo("<｜begin▁of▁sentence｜>hi"));
        Assert.That(t.Decode(t.Encode("hi"), skipSpecialTokens: true), Is.EqualTo("hi"));
        // A Sequence of ByteLevel and a template with a suffix.
        const string seq = """
            {"type": "Sequence", "processors": [{"type": "ByteLevel", "trim_offsets": false},
              {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<｜end▁of▁sentence｜>", "type_id": 0}}], "special_tokens": {}}]}
            """;
        var t2 = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(addedTokens: TokenizerFixtures.Specials, postProcessor: seq));
        Assert.That(t2.Encode("x"), Is.EqualTo(new[] { 300, 'x', 301 }));
    }

    [Test]
    public void StreamingDecodeEqualsFullDecodeAndHoldsBackPartialCharacters()
    {
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(addedTokens: TokenizerFixtures.Specials));
        // "€" is E2 82 AC: nothing comes out until the last byte arrives.
        var d = t.CreateStreamDecoder();
        Assert.That(d.Append(0xE2), Is.EqualTo(""));
        Assert.That(d.Append(0x82), Is.EqualTo(""));
        Assert.That(d.Append(0xAC), Is.EqualTo("€"));
        Assert.That(d.Append('a'), Is.EqualTo("a"));
        Assert.That(d.Append(0xF0), Is.EqualTo(""));
        Assert.That(d.Flush(), Is.EqualTo("\uFFFD"));

        // Random id streams (bytes, including invalid UTF-8, and added tokens): pieces concatenate to Decode.
        Gen.OneOf(Gen.Int[0, 255], Gen.Int[300, 303]).Array[0, 30].Sample(ids =>
        {
            foreach (bool skip in new[] { false, true })
            {
                var stream = t.CreateStreamDecoder(skip);
                var text = new StringBuilder();
                foreach (int id in ids) text.Append(stream.Append(id));
                text.Append(stream.Flush());
                Assert.That(text.ToString(), Is.EqualTo(t.Decode(ids, skip)));
            }
        }, iter: 300);
    }

    [Test]
    public void DecodeRejectsUnknownIds()
    {
        var t = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["a b"]));
        Assert.That(t.VocabSize, Is.EqualTo(257));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([1, 257]));
        Assert.That(e!.Message, Does.Contain("257").And.Contain("fixture.json"));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([-1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.CreateStreamDecoder().Append(9999));
    }

    [Test]
    public void IgnoreMergesTakesWholeVocabularyWordsAndByteFallbackCoversUnknownCharacters()
    {
        string json = TokenizerFixtures.ByteLevel(["b c", "a b", "ab c"]).Replace("\"byte_fallback\": false", "\"byte_fallback\": false, \"ignore_merges\": true", StringComparison.Ordinal);
        var t = TokenizerFixtures.Parse(json);
        Assert.That(t.Model.IgnoreMerges, Is.True);
        Assert.That(t.Encode("abc"), Is.EqualTo(new[] { Id(t, "abc") }));
        // The same file without ignore_merges merges by rank: "b c" first, and (a, bc) has no merge.
        var merging = TokenizerFixtures.Parse(TokenizerFixtures.ByteLevel(["b c", "a b", "ab c"]));
        Assert.That(merging.Encode("abc"), Is.EqualTo(new[] { 'a', Id(t, "bc") }));
        // Byte fallback (SentencePiece-style vocabularies): a character outside the vocabulary becomes <0xHH> tokens.
        const string fallback = """
            {"normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": {"type": "ByteLevel"},
             "model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0, "<0x00>": 1}, "merges": []}}
            """;
        var e = Assert.Throws<TokenizerFormatException>(() => TokenizerFixtures.Parse(fallback));
        Assert.That(e!.Field, Is.EqualTo("model.byte_fallback"));
        var vocab = string.Join(", ", Enumerable.Range(0, 256).Select(b => $"\"<0x{b:X2}>\": {b}"));
        var ok = TokenizerFixtures.Parse(fallback.Replace("\"a\": 0, \"<0x00>\": 1", "\"a\": 256, " + vocab, StringComparison.Ordinal));
        Assert.That(ok.Encode("aé"), Is.EqualTo(new[] { 256, 0xC3, 0xA9 }));
    }
}
