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
        var (code, log) = Bash(_temp, 30, [], [Path.Combine(_bundle, "verify.sh"), .. args]);
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

    [Test]
    public void ReportRendersBenchmarksDecodeAndPeerRatiosFromTheCliJson()
    {
        // The bench JSON exactly as the CLI serialises it, so a renamed key breaks this test rather than a GPU run.
        DeepKernels.Diagnostics.Benchmarking.BenchCaseResult Gemm(string variant, double ms) =>
            new("gemm", $"gemm M=128 N=7168 K=2048 {variant}", new Dictionary<string, long> { ["M"] = 128, ["N"] = 7168, ["K"] = 2048 }, "fp8",
                3.76e9, 1.5e7, 250, ms, ms, ms, [ms], 3.76e9 / ms / 1e6, 1.5e7 / ms / 1e6, 40, 10) { Variant = variant, Kernels = ["dk_fp8_gemm"] };
        var decode = new DeepKernels.Diagnostics.Benchmarking.BenchCaseResult("model-decode", "model-decode tiny batch=1", new Dictionary<string, long> { ["batch"] = 1 },
            "fp8", 1e6, 3.2e7, 0.03, 2.0, 2.0, 2.0, [2.0], 0.5, 16, null, 0.3) { TokensPerSecond = 500, MsPerLayer = 1.0 };
        var bench = new DeepKernels.Diagnostics.Benchmarking.BenchReport(DeepKernels.Diagnostics.Benchmarking.BenchReport.SchemaId, DateTime.UtcNow, "cuda", true, null, "cuda-events", 3, 10,
            new("NVIDIA H200", 90, "datasheet", ""), DeepKernels.Diagnostics.Benchmarking.BenchLimits.None, [Gemm("portable", 0.2), Gemm("sm90", 0.05), decode]);
        string dir = Path.Combine(_temp, "report");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "bench-cuda.json"), bench.ToJson());
        File.WriteAllText(Path.Combine(dir, "peers.json"), """
            {"device":"NVIDIA H200","torch":"2.11","errors":[],"results":[
              {"kind":"gemm","name":"torch._scaled_mm fp8 M=128 N=7168 K=2048","shape":{"M":128,"N":7168,"K":2048},"median_ms":0.04,"tflops":94,"gbps":375},
              {"kind":"gemm-bf16","name":"torch.matmul bf16 M=128 N=7168 K=2048","shape":{"M":128,"N":7168,"K":2048},"median_ms":0.1,"tflops":37,"gbps":300},
              {"kind":"mla","name":"sdpa decompressed b=128 s=4096 h=16","shape":{"b":128,"seqlen":4096,"h_q":16,"s_q":1},"median_ms":1.0,"tflops":1,"gbps":3000}]}
            """);
        File.WriteAllText(Path.Combine(dir, "steps.tsv"), "gpu\tok\t0\tNVIDIA H200 (compute capability 9.0)\nbench\tok\t20\t3 cases measured, 0 skipped\n");
        var (code, log) = Bash(dir, 30, default, "-c", $"python3 '{Path.Combine(_bundle, "report.py")}' . 'NVIDIA H200' 0 42");
        Assert.That(code, Is.EqualTo(0), log);
        string md = File.ReadAllText(Path.Combine(dir, "report.md"));
        Assert.That(md, Does.Contain("| gemm M=128 N=7168 K=2048 sm90 | 0.0500 | 75.20 | 300 | 40.0 | 10.0 |"), md);
        Assert.That(md, Does.Contain("| model-decode tiny batch=1 | 2.000 | 500.0 | 1.000 | 16 | 0.3 |"), md);
        // Each peer is put next to our fastest case of its op at the same shape: sm90, 0.05 ms.
        Assert.That(md, Does.Contain("| torch._scaled_mm fp8 M=128 N=7168 K=2048 | 94.00 | 375 | gemm M=128 N=7168 K=2048 sm90 | 75.20 | 0.80 |"), md);
        Assert.That(md, Does.Contain("| torch.matmul bf16 M=128 N=7168 K=2048 | 37.00 | 300 | gemm M=128 N=7168 K=2048 sm90 | 75.20 | 2.00 |"), md);
        Assert.That(md, Does.Contain("| sdpa decompressed b=128 s=4096 h=16 | 1.00 | 3000 | - | - | - |"), md);
        Assert.That(md, Does.Contain("| gemm M=128 N=7168 K=2048 | 0.2000 | 0.0500 | 4.00x |"), "the Hopper kernel against the portable one");
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "report.json")));
        Assert.That(report.RootElement.GetProperty("emulated").GetBoolean(), Is.False);
        Assert.That(report.RootElement.GetProperty("comparisons")[0].GetProperty("ours_gbps").GetDouble(), Is.EqualTo(300).Within(1e-9));
    }

    [Test]
    public void EmulatorRehearsalRunsEveryGpuStepAndReportsASanitizerFinding()
    {
        // verify.sh --emulate: the GPU branch of the script (native build, profile, CUDA tests through the
        // bundled vstest, traced bench, kernel coverage, sanitizer, report) with the emulator as the device.
        // compute-sanitizer is a stand-in that runs the cases it is given and plants one memcheck error
        // when they include rmsnorm, so the run must end with exit 1 and name the log.
        if (!System.IO.File.Exists(Path.Combine(TestContext.CurrentContext.TestDirectory, "libdeepkernels_emu.so")))
            Assert.Ignore("the kernel emulator was not built");
        var (found, _) = Bash(_temp, 10, default, "-c", "command -v nvcc || test -x /usr/local/cuda/bin/nvcc");
        if (found != 0) Assert.Ignore("nvcc not found: the rehearsal builds the fatbin like a GPU host");
        string output = Path.Combine(_temp, "emulate");
        // With the CUDA 12 compiler CI fetches (tools/nvcc12/fetch.sh), the native step builds sm_90a as on an H200.
        string cuda12 = Path.Combine(_root, ".toolchain", "cuda", "nvcc");
        string tools = Path.Combine(_temp, "fake-tools");
        Directory.CreateDirectory(tools);
        File.WriteAllText(Path.Combine(tools, "compute-sanitizer"), """
            #!/usr/bin/env bash
            while [[ "$1" == --* ]]; do case "$1" in --tool|--error-exitcode) shift 2 ;; *) shift ;; esac; done
            echo "========= COMPUTE-SANITIZER"
            "$@"; rc=$?
            file=""; prev=""; for a in "$@"; do [[ "$prev" == --cases-file ]] && file="$a"; prev="$a"; done
            if [[ -n "$file" ]] && grep -q rmsnorm "$file"; then
              echo "========= Invalid __global__ read of size 4 bytes"; echo "=========     at dk_rms_norm"
              echo "========= ERROR SUMMARY: 1 error"; exit 86
            fi
            echo "========= ERROR SUMMARY: 0 errors"; exit $rc
            """.Replace("\r", ""));
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(Path.Combine(tools, "compute-sanitizer"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var (code, log) = Bash(_bundle, 600,
            [("VERIFY_TEST_FILTER", "(FullyQualifiedName~CudaActivationQuantizationTests|FullyQualifiedName~CudaNormActTests)"),
             ("NVCC", File.Exists(cuda12) ? cuda12 : ""),
             ("PATH", tools + ":" + Environment.GetEnvironmentVariable("PATH"))],
            ["verify.sh", output, "--emulate"]);
        Assert.That(code, Is.EqualTo(1), log);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "report.json")));
        var root = report.RootElement;
        Assert.That(root.GetProperty("emulated").GetBoolean(), Is.True);
        var steps = root.GetProperty("steps").EnumerateArray().ToDictionary(s => s.GetProperty("name").GetString()!, s => s);
        foreach (string step in new[] { "unpack", "gpu", "native", "tests", "bench", "report" })
            Assert.That(steps[step].GetProperty("status").GetString(), Is.EqualTo("ok"), $"{step}: {steps[step].GetProperty("detail")}");
        Assert.That(steps["peers"].GetProperty("status").GetString(), Is.EqualTo("skipped"));
        // All four traced cases ran in one sanitizer process (--cases-file); the planted error fails the step.
        Assert.That(steps["sanitizer"].GetProperty("status").GetString(), Is.EqualTo("failed"));
        Assert.That(steps["sanitizer"].GetProperty("detail").GetString(), Does.Contain("sanitizer-1.log: 1 errors, exit 86"));
        Assert.That(File.ReadAllLines(Path.Combine(output, "sanitizer-1.cases")), Has.Length.EqualTo(4));
        string sanitized = File.ReadAllText(Path.Combine(output, "sanitizer-1.log"));
        foreach (string c in File.ReadAllLines(Path.Combine(output, "sanitizer-1.cases")))
            Assert.That(sanitized, Does.Contain(c), "every case of the file ran under the sanitizer");
        var tests = root.GetProperty("cuda_tests");
        Assert.That(tests.GetProperty("passed").GetInt32(), Is.GreaterThanOrEqualTo(20));
        Assert.That(tests.GetProperty("failed").GetInt32(), Is.Zero);
        // Every measured case lists the kernels it launched, and the coverage maps them to sanitizer cases.
        var results = root.GetProperty("bench").GetProperty("results").EnumerateArray().ToList();
        Assert.That(results, Has.Count.EqualTo(4));
        Assert.That(results.All(r => r.GetProperty("kernels").GetArrayLength() > 0), Is.True, "kernels traced per case");
        var kernels = root.GetProperty("coverage").GetProperty("kernels").EnumerateObject().ToList();
        Assert.That(kernels.Count(k => k.Value.GetProperty("sanitizer_case").ValueKind == JsonValueKind.String), Is.GreaterThanOrEqualTo(4));
        Assert.That(root.GetProperty("profile").GetProperty("kernels").GetArrayLength(), Is.GreaterThan(20));
        if (File.Exists(cuda12))
            Assert.That(steps["native"].GetProperty("detail").GetString(), Does.Contain("sm_90a").And.Contain("release 12."), "the CUDA 12 build lists its sm_90a cubins");
        string md = File.ReadAllText(Path.Combine(output, "report.md"));
        Assert.That(md, Does.Contain("Rehearsal on the kernel emulator").And.Contain("## Benchmarks (emulator wall time, median)").And.Contain("| rmsnorm T=1 H=7168 |"));
        Assert.That(File.ReadAllText(Path.Combine(output, "profile.txt")), Does.Contain("Resources:"));
    }

    [Test]
    public void HelpShowsTheWholeHeaderWithEveryOptionAndTheExitCodes()
    {
        var (code, log) = Bash(_temp, 30, default, Path.Combine(_bundle, "verify.sh"), "--help");
        Assert.That(code, Is.Zero, log);
        foreach (string option in new[] { "--dry-run", "--emulate", "--v3-bench", "--skip-sanitizer", "--work", "VERIFY_TEST_FILTER", "Exit codes", "3 no usable GPU" })
            Assert.That(log, Does.Contain(option));
        Assert.That(log, Does.Not.Contain("set -uo"), "the help stops before the code");
    }

    [TestCase("--dry-run", "--emulate", "exclude each other")]
    [TestCase("--emulate", "--v3-bench", "needs a GPU")]
    public void EmulateRefusesOptionsItCannotHonour(string first, string second, string message)
    {
        var (code, log) = Bash(_temp, 30, default, Path.Combine(_bundle, "verify.sh"), "out", first, second);
        Assert.That(code, Is.EqualTo(2), log);
        Assert.That(log, Does.Contain(message));
    }

    private static (int Code, string Output) Bash(string workingDirectory, int timeoutSeconds, (string Name, string Value) env, params string[] args) =>
        Bash(workingDirectory, timeoutSeconds, env.Name is null ? Array.Empty<(string, string)>() : [env], args);

    private static (int Code, string Output) Bash(string workingDirectory, int timeoutSeconds, (string Name, string Value)[] env, string[] args)
    {
        var psi = new ProcessStartInfo("bash") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (var (name, value) in env) psi.Environment[name] = value;
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
