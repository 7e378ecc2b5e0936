using System.Text.Json;
using DeepKernels.Cli;
using DeepKernels.Diagnostics.Benchmarking;

namespace DeepKernels.Tests.Diagnostics;

public class BenchCommandTests
{
    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void UnknownOpListsValidOpsWithExitCode2()
    {
        var (code, _, err) = Cli("bench", "--backend", "cpu", "--op", "nope");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown op 'nope'").And.Contain("act-quant"));
    }

    [Test]
    public void OpListSelectsTheCasesOfEachNamedOpAndRejectsAnUnknownOne()
    {
        var (code, output, err) = Cli("bench", "--backend", "cpu", "--op", "rmsnorm, act-quant", "--list");
        Assert.That(code, Is.EqualTo(0), err);
        var ops = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]).Distinct().ToList();
        Assert.That(ops, Is.EquivalentTo(new[] { "rmsnorm", "act-quant" }), output);

        (code, _, err) = Cli("bench", "--backend", "cpu", "--op", "rmsnorm,nope", "--list");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown op 'nope'"));
        (code, _, err) = Cli("bench", "--backend", "cpu", "--op", ",", "--list");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown op ','"));
    }

    [Test]
    public void CasesFileRunsTheNamedCasesInOneProcessAndRejectsUnknownNames()
    {
        string dir = Directory.CreateTempSubdirectory("dk-cases-").FullName;
        try
        {
            string file = Path.Combine(dir, "cases.txt"), json = Path.Combine(dir, "out.json");
            File.WriteAllText(file, "# sanitizer batch\nact-dequant M=1 K=7168\n\nrmsnorm T=1 H=7168\n");
            var (code, output, err) = Cli("bench", "--backend", "cpu", "--cases-file", file, "--repeats", "1", "--warmup", "0", "--json", json);
            Assert.That(code, Is.EqualTo(0), err + output);
            Assert.That(BenchReport.FromJson(File.ReadAllText(json)).Results.Select(r => r.Name), Is.EqualTo(new[] { "act-dequant M=1 K=7168", "rmsnorm T=1 H=7168" }));

            File.WriteAllText(file, "rmsnorm T=1 H=7168\nrmsnorm T=3 H=7168\n");
            (code, _, err) = Cli("bench", "--backend", "cpu", "--cases-file", file, "--list");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("no case is named 'rmsnorm T=3 H=7168'"));
            (code, _, err) = Cli("bench", "--backend", "cpu", "--cases-file", file, "--case", "rmsnorm", "--list");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("exclude each other"));
            (code, _, err) = Cli("bench", "--backend", "cpu", "--cases-file", Path.Combine(dir, "missing.txt"), "--list");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("cannot read --cases-file"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void UnknownBackendIsAUsageError()
    {
        var (code, _, err) = Cli("bench", "--backend", "tpu");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("cpu, cuda, cuda-emu"));
    }

    [Test]
    public void CudaWithoutAGpuReportsTheReasonCleanly()
    {
        string json = Path.Combine(Path.GetTempPath(), $"dk-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = Cli("bench", "--backend", "cuda", "--op", "act-quant", "--json", json);
            // On a GPU host the CUDA backend may be ready; then this is a real run.
            if (code == 0) Assert.Ignore("a CUDA device is ready here");
            Assert.That(code, Is.EqualTo(3), err + output);
            Assert.That(output, Does.Contain("Backend 'cuda' unavailable:"));
            var report = BenchReport.FromJson(File.ReadAllText(json));
            Assert.That(report.Available, Is.False);
            Assert.That(report.Reason, Is.Not.Empty);
            Assert.That(report.Results, Is.Empty);
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Test]
    public void CpuRunWritesJsonWithThroughput()
    {
        string json = Path.Combine(Path.GetTempPath(), $"dk-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = Cli("bench", "--backend", "cpu", "--op", "act-quant", "--case", "M=1 ", "--repeats", "3", "--warmup", "1", "--json", json);
            Assert.That(code, Is.EqualTo(0), err + output);
            Assert.That(output, Does.Contain("act-quant M=1 K=7168"));
            var report = BenchReport.FromJson(File.ReadAllText(json));
            Assert.That(report.Backend, Is.EqualTo("cpu"));
            Assert.That(report.Timing, Is.EqualTo("stopwatch"));
            var r = report.Results.Single();
            Assert.That(r.SamplesMs, Has.Count.EqualTo(3));
            Assert.That(r.MedianMs, Is.GreaterThan(0));
            Assert.That(r.GBps, Is.EqualTo(r.Bytes / (r.MedianMs / 1e3) / 1e9).Within(1e-6).Percent);
            Assert.That(r.PercentMemoryPeak, Is.EqualTo(100 * r.GBps / report.Limits.MemoryGBps!.Value).Within(1e-6).Percent);
            // The documented schema uses camelCase names.
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            Assert.That(doc.RootElement.GetProperty("results")[0].GetProperty("medianMs").GetDouble(), Is.EqualTo(r.MedianMs));
            Assert.That(doc.RootElement.GetProperty("limits").GetProperty("computeGflops").GetProperty("fp32").GetDouble(), Is.GreaterThan(0));
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Test]
    public void ListShowsCasesWithoutRunningThem()
    {
        var (code, output, _) = Cli("bench", "--backend", "cpu", "--list");
        Assert.That(code, Is.EqualTo(0));
        Assert.That(output, Does.Contain("act-quant M=4096 K=7168"));
    }
}
