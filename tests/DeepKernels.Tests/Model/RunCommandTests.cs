using DeepKernels.Cli;

namespace DeepKernels.Tests.Model;

/// <summary>`deepkernels run` end to end on the tiny preset (CPU).</summary>
public class RunCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = Program.Run(["run", "--cache-dir", TinyModelFixture.CacheRoot, .. args], output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void TheDefaultJobPrintsTheReport()
    {
        var (code, text, err) = Run("--max-tokens", "4", "--batch", "2", "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain(".NET runtime"));
        Assert.That(text, Does.Contain("backend  : cpu"));
        Assert.That(text, Does.Contain("weights  :").And.Contain("in BF16"));
        Assert.That(text, Does.Contain("KV cache : 4608 B/token"));
        Assert.That(text, Does.Contain("tokens/s").And.Contain("memory-bandwidth bound"));
        Assert.That(text, Does.Contain("output 0 :").And.Contain("output 1 :"));
        Assert.That(text, Does.Contain("flat"));
    }

    [Test]
    public void PromptIdsAreUsedAndValidated()
    {
        var (code, text, err) = Run("--max-tokens", "2", "--prompt-ids", "5,6,7", "--temperature", "0.7", "--seed", "3");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain("prompt 0 : [5,6,7]"));
        var bad = Run("--prompt-ids", "5,99999");
        Assert.That(bad.Code, Is.EqualTo(2));
        Assert.That(bad.Err, Does.Contain("99999"));
    }

    [Test]
    public void TextPromptsNeedATokenizerAndSaySo()
    {
        // A checkpoint directory without tokenizer.json (the check comes before loading weights).
        string dir = Path.Combine(TinyModelFixture.CacheRoot, "no-tokenizer");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), DeepKernels.Model.Presets.TinyPreset.Config.ToJson());
        var (code, _, err) = Run("--model", dir, "--prompt", "hello");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("tokenizer.json").And.Contain("--prompt-ids"));
    }
}
