using System.Diagnostics;
using System.Text.Json;

namespace DeepKernels.Tests.GpuBundle;

/// <summary>
/// Builds the GPU verification bundle (the --fast variant: gzip instead of xz) and runs the
/// non-GPU parts of verify.sh: unpacking the bundled .NET runtime, running the CLI and one
/// test through the bundled vstest.console on it, argument handling, and report writing with the
/// GPU steps reported as skipped.
/// </summary>
[NonParallelizable]
public class GpuBundleTests
{
    private string _root = null!;
    private string _temp = null!;
    private string _bundle = null!;

    [OneTimeSetUp]
    public void BuildBundle()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("the GPU bundle targets Linux hosts");
        string? root = null;
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Kernels.sln"))) { root = dir.FullName; break; }
        if (root is null || !File.Exists(Path.Combine(root, "tools/gpu-bundle/make-bundle.sh")))
            Assert.Ignore("not running from a source checkout");
        _root = root!;
        _temp = Directory.CreateTempSubdirectory("dk-bundle-").FullName;
        _bundle = Path.Combine(_temp, "bundle");
        // The test assemblies come from this very build: bin/<Config>/net10.0.
        string config = new DirectoryInfo(TestContext.CurrentContext.TestDirectory).Parent!.Name;
        var (code, output) = Bash(_root, 240, ("CONFIG", config), "tools/gpu-bundle/make-bundle.sh", _bundle, "--fast");
        Assert.That(code, Is.EqualTo(0), output);
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        if (_temp is not null && Directory.Exists(_temp)) Directory.Delete(_temp, recursive: true);
    }

    [Test]
    public void BundleHasEverythingAndFitsTheLimit()
    {
        foreach (string f in new[] { "verify.sh", "peers.py", "report.py", "coverage.py", "manifest.json", "runtime.tar.gz", "app.tar.gz", "src.tar.gz" })
            Assert.That(File.Exists(Path.Combine(_bundle, f)), Is.True, f);
        long bytes = Directory.EnumerateFiles(_bundle).Sum(f => new FileInfo(f).Length);
        Assert.That(bytes, Is.LessThanOrEqualTo(60L << 20), "bundle must stay within 60 MiB even in --fast mode");
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(_bundle, "manifest.json")));
        Assert.That(manifest.RootElement.GetProperty("dotnet_runtime").GetString(), Does.StartWith("10."));
    }

    [Test]
    public void DryRunUnpacksRunsTheRuntimeAndReportsGpuStepsAsSkipped()
    {
        string output = Path.Combine(_temp, "dry");
        var (code, log) = Bash(_bundle, 180, default, "verify.sh", output, "--dry-run");
        Assert.That(code, Is.EqualTo(0), log);
        Assert.That(log, Does.Contain("[verify").And.Contain("unpack: ok"));
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "report.json")));
        var root = report.RootElement;
        Assert.That(root.GetProperty("schema").GetString(), Is.EqualTo("deepkernels-gpu-report/1"));
        Assert.That(root.GetProperty("dry_run").GetBoolean(), Is.True);
        var steps = root.GetProperty("steps").EnumerateArray()
            .ToDictionary(s => s.GetProperty("name").GetString()!, s => s.GetProperty("status").GetString());
        Assert.That(steps["unpack"], Is.EqualTo("ok"));
        Assert.That(steps["runner"], Is.EqualTo("ok"), "the bundled vstest.console must run a test on the bundled runtime");
        foreach (string gpuStep in new[] { "gpu", "native", "tests", "bench", "peers", "sanitizer" })
            Assert.That(steps[gpuStep], Is.EqualTo("skipped"), gpuStep);
        Assert.That(File.ReadAllText(Path.Combine(output, "info.txt")), Does.Contain(".NET 10"));
        Assert.That(File.ReadAllText(Path.Combine(output, "report.md")), Does.Contain("| tests | skipped |"));
    }

    [TestCase(new string[0], "OUTDIR is required")]
    [TestCase(new[] { "out", "--bogus" }, "unknown option '--bogus'")]
    [TestCase(new[] { "a", "b" }, "more than one OUTDIR")]
    [TestCase(new[] { "--work" }, "--work needs a directory")]
    public void BadArgumentsExitWith2(string[] args, string message)
    {
        var (code, log) = Bash(_temp, 30, default, [Path.Combine(_bundle, "verify.sh"), .. args]);
        Assert.That(code, Is.EqualTo(2), log);
        Assert.That(log, Does.Contain(message));
    }

    [Test]
    public void WithoutAGpuARealRunSaysSoAndExits3()
    {
        if (File.Exists("/usr/bin/nvidia-smi") || File.Exists("/usr/local/bin/nvidia-smi")) Assert.Ignore("this host may have a GPU");
        string output = Path.Combine(_temp, "nogpu");
        var (code, log) = Bash(_bundle, 180, default, "verify.sh", output);
        Assert.That(code, Is.EqualTo(3), log);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "report.json")));
        var gpu = report.RootElement.GetProperty("steps").EnumerateArray().First(s => s.GetProperty("name").GetString() == "gpu");
        Assert.That(gpu.GetProperty("status").GetString(), Is.EqualTo("skipped"));
        Assert.That(gpu.GetProperty("detail").GetString(), Does.Contain("nvidia-smi"));
    }

    [Test]
    public void CoveragePlanGivesEveryLaunchedKernelItsCheapestCaseAndListsTheRest()
    {
        // A bench report as the CLI writes it (kernels traced per case) and a profile of the fatbin.
        DeepKernels.Diagnostics.Benchmarking.BenchCaseResult Result(string name, double bytes, params string[] kernels) =>
            new("op", name, new Dictionary<string, long>(), "fp8", 1, bytes, 1, 1, 1, 1, [1.0], 1, 1, null, null) { Kernels = kernels };
        var bench = new DeepKernels.Diagnostics.Benchmarking.BenchReport(DeepKernels.Diagnostics.Benchmarking.BenchReport.SchemaId, DateTime.UtcNow, "cuda", true, null, "cuda-events", 0, 1,
            new("GPU", 90, "datasheet", ""), DeepKernels.Diagnostics.Benchmarking.BenchLimits.None,
            [Result("big", 1e9, "dk_gemm", "dk_quant"), Result("small", 1e3, "dk_quant"), Result("gemm small", 1e6, "dk_gemm", "dk_reduce")]);
        string dir = Path.Combine(_temp, "coverage");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "bench.json"), bench.ToJson());
        File.WriteAllText(Path.Combine(dir, "profile.json"), """{"kernels":[{"kernel":"dk_gemm","arch":"sm_90"},{"kernel":"dk_quant","arch":"sm_90"},{"kernel":"dk_rope","arch":"sm_90"},{"kernel":"dk_reduce","arch":"sm_80"}]}""");
        var (code, log) = Bash(dir, 30, default, "-c", $"python3 '{Path.Combine(_bundle, "coverage.py")}' bench.json profile.json coverage.json");
        Assert.That(code, Is.EqualTo(0), log);
        Assert.That(log.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "gemm small", "small" }));
        using var coverage = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "coverage.json")));
        Assert.That(coverage.RootElement.GetProperty("uncovered").EnumerateArray().Select(e => e.GetString()), Is.EqualTo(new[] { "dk_rope" }));
        var kernels = coverage.RootElement.GetProperty("kernels");
        Assert.That(kernels.GetProperty("dk_gemm").GetProperty("sanitizer_case").GetString(), Is.EqualTo("gemm small"));
        Assert.That(kernels.GetProperty("dk_quant").GetProperty("sanitizer_case").GetString(), Is.EqualTo("small"));
        Assert.That(kernels.GetProperty("dk_rope").GetProperty("benchmarked").GetBoolean(), Is.False);
    }

    private static (int Code, string Output) Bash(string workingDirectory, int timeoutSeconds, (string Name, string Value) env, params string[] args)
    {
        var psi = new ProcessStartInfo("bash") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        if (env.Name is not null) psi.Environment[env.Name] = env.Value;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"bash {string.Join(' ', args)} did not finish within {timeoutSeconds} s");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}
