using System.Security.Cryptography;
using System.Text;
using CsCheck;
using DeepKernels.Cli;
using DeepKernels.Cli.Commands;
using DeepKernels.Model.Presets;
using DeepKernels.Model.Tokenization;
using DeepKernels.Tests.Model;

namespace DeepKernels.Tests.Tokenization;

/// <summary>The tiny preset's generated tokenizer and `run --prompt` on the tiny model.</summary>
public class TinyTokenizerTests
{
    private static readonly Lazy<BpeTokenizer> Tiny = new(() => BpeTokenizer.Parse(TinyJson(), "tiny"));

    private static string TinyJson() => TinyTokenizer.Json(TinyPreset.Config.VocabSize, TinyPreset.Config.BosTokenId, TinyPreset.Config.EosTokenIds[0]);

    [Test]
    public void TheTinyTokenizerFitsTheConfig()
    {
        var t = Tiny.Value;
        var c = TinyPreset.Config;
        Assert.That(t.VocabSize, Is.EqualTo(c.VocabSize));
        Assert.That(Enumerable.Range(0, c.VocabSize).All(t.IsValidId), Is.True, "every model id decodes");
        Assert.That(t.IdToToken(c.BosTokenId), Is.EqualTo(TinyTokenizer.BosToken));
        Assert.That(t.IdToToken(c.EosTokenIds[0]), Is.EqualTo(TinyTokenizer.EosToken));
        Assert.That(t.IsSpecial(c.BosTokenId) && t.IsSpecial(c.EosTokenIds[0]), Is.True);
        // The corpus fills the vocabulary with merges: no reserved filler tokens.
        Assert.That(t.AddedTokens, Has.Count.EqualTo(2));
        Assert.That(t.Model.MergeCount, Is.GreaterThanOrEqualTo(c.VocabSize - 258));
        Assert.That(t.Encode(" the"), Is.EqualTo(new[] { c.BosTokenId, t.TokenToId("Ġthe")!.Value }), "a common word is one token");
        Assert.That(t.Encode(" harbour", addSpecialTokens: false), Has.Length.EqualTo(1));
    }

    [Test]
    public void TheTinyTokenizerIsDeterministic()
    {
        // Built afresh (not from the cache) twice and compared byte for byte.
        var build = typeof(TinyTokenizer).GetMethod("Build", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!;
        string a = (string)build.Invoke(null, [2048, 0, 1])!;
        string b = (string)build.Invoke(null, [2048, 0, 1])!;
        Assert.That(SHA256.HashData(Encoding.UTF8.GetBytes(a)), Is.EqualTo(SHA256.HashData(Encoding.UTF8.GetBytes(b))));
        Assert.That(a, Is.EqualTo(TinyJson()));
        // Other special ids move the specials, not the learned merges.
        var moved = BpeTokenizer.Parse(TinyTokenizer.Json(2048, 5, 700));
        Assert.That(moved.IdToToken(5), Is.EqualTo(TinyTokenizer.BosToken));
        Assert.That(moved.IdToToken(700), Is.EqualTo(TinyTokenizer.EosToken));
        Assert.That(moved.Model.MergeCount, Is.EqualTo(Tiny.Value.Model.MergeCount));
        Assert.That(moved.Decode(moved.Encode("moved ids", false)), Is.EqualTo("moved ids"));
    }

    [Test]
    public void TheTinyTokenizerRoundTripsText()
    {
        var t = Tiny.Value;
        Gen.String.Sample(s =>
        {
            if (s.Any(char.IsSurrogate)) return; // CsCheck strings may hold lone surrogates, which are not text
            Assert.That(t.Decode(t.Encode(s, false)), Is.EqualTo(s));
            Assert.That(t.Decode(t.Encode(s), skipSpecialTokens: true), Is.EqualTo(s));
        }, iter: 200);
        const string mixed = "The market at 06:30 — 12345 fish, 3 cats 😺; 東京 / とうきょう\r\n\tdone.";
        Assert.That(t.Decode(t.Encode(mixed, false)), Is.EqualTo(mixed));
    }

    [Test]
    public void ThePresetDirectoryHasTheTokenizerAndOldCachesGetOne()
    {
        string dir = TinyPreset.EnsureCheckpoint(out _, TinyModelFixture.CacheRoot);
        string path = Path.Combine(dir, "tokenizer.json");
        Assert.That(File.ReadAllText(path), Is.EqualTo(TinyJson()));
        File.Delete(path); // a directory cached before the preset had a tokenizer
        Assert.That(TinyPreset.EnsureCheckpoint(out bool created, TinyModelFixture.CacheRoot), Is.EqualTo(dir));
        Assert.That(created, Is.False, "the weights are not rewritten");
        Assert.That(File.ReadAllText(path), Is.EqualTo(TinyJson()));
    }

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = Program.Run(["run", "--cache-dir", TinyModelFixture.CacheRoot, "--backend", "cpu", .. args], output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void RunWithATextPromptPrintsText()
    {
        var (code, text, err) = Run("--prompt", "The harbour master writes", "--max-tokens", "4");
        Assert.That(code, Is.EqualTo(0), err);
        var ids = Tiny.Value.Encode("The harbour master writes");
        Assert.That(text, Does.Contain($"prompt 0 : [{string.Join(",", ids)}]"));
        Assert.That(text, Does.Contain("text 0   : \"The harbour master writes\" -> \""));
        Assert.That(text, Does.Contain("tokenizer:").And.Contain("gibberish"));
        // The generated text is the decode of the printed ids.
        string outLine = text.Split('\n').First(l => l.StartsWith("output 0 :", StringComparison.Ordinal));
        var generated = outLine[(outLine.IndexOf('[', StringComparison.Ordinal) + 1)..outLine.IndexOf(']', StringComparison.Ordinal)].Split(',').Select(int.Parse).ToArray();
        Assert.That(generated, Has.Length.EqualTo(4).Or.Length.LessThan(4).And.Contains(TinyPreset.Config.EosTokenIds[0]));
        string textLine = text.Split('\n').First(l => l.StartsWith("text 0", StringComparison.Ordinal));
        string expected = RunCommand.Printable(Tiny.Value.Decode(generated, skipSpecialTokens: true));
        Assert.That(textLine.TrimEnd('\r'), Does.EndWith("-> \"" + expected + "\""));
    }

    [Test]
    public void TheDefaultRunUsesATextPrompt()
    {
        var (code, text, err) = Run("--max-tokens", "2");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain("text 0   : \"" + RunCommand.DefaultTextPrompt + "\""));
        Assert.That(text, Does.Contain("KV cache : 4608 B/token").And.Contain("memory-bandwidth bound"));
        // Token ids still work and now also print text.
        var ids = Run("--max-tokens", "2", "--prompt-ids", "5,6,7");
        Assert.That(ids.Code, Is.EqualTo(0), ids.Err);
        Assert.That(ids.Out, Does.Contain("prompt 0 : [5,6,7]").And.Contain("text 0   :"));
    }

    [Test]
    public void ABrokenTokenizerStopsTextPromptsButNotIdPrompts()
    {
        string tiny = TinyPreset.EnsureCheckpoint(out _, TinyModelFixture.CacheRoot);
        string dir = Path.Combine(TinyModelFixture.CacheRoot, "broken-tokenizer");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(tiny, "config.json"), Path.Combine(dir, "config.json"), overwrite: true);
        if (!File.Exists(Path.Combine(dir, "model.safetensors"))) File.CreateSymbolicLink(Path.Combine(dir, "model.safetensors"), Path.Combine(tiny, "model.safetensors"));
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TinyJson().Replace("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFKC\"}", StringComparison.Ordinal));
        var text = Run("--model", dir, "--prompt", "hello", "--max-tokens", "1");
        Assert.That(text.Code, Is.EqualTo(1));
        Assert.That(text.Err, Does.Contain("TokenizerNotSupportedException").And.Contain("normalizer").And.Contain("NFKC"));
        var ids = Run("--model", dir, "--prompt-ids", "5,6", "--max-tokens", "1");
        Assert.That(ids.Code, Is.EqualTo(0), ids.Err);
        Assert.That(ids.Out, Does.Contain("tokenizer: not usable").And.Contain("no tokenizer: ids only"));
    }

    [Test]
    public void PrintableEscapesControlCharacters()
    {
        Assert.That(RunCommand.Printable("a\nb\r\t\"\\\u0001é"), Is.EqualTo("a\\nb\\r\\t\\\"\\\\\\u0001é"));
    }
}
