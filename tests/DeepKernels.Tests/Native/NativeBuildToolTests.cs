using System.Diagnostics;
using System.Text.Json;

namespace DeepKernels.Tests.Native;

/// <summary>
/// cmake/dk_kernels.py's fatbin step with a stand-in compiler: a failing sm_90a build falls back
/// to the other archs (kept, logged, dropped from the resource report) instead of failing the
/// whole native build, while any other failure still fails it.
/// </summary>
public class NativeBuildToolTests
{
    // Fails with a ptxas-like error whenever asked for sm_90a (or always, with FAIL_ALL set);
    // otherwise prints ptxas -v lines for one kernel per requested SASS arch.
    private const string FakeCompiler = """
        #!/bin/bash
        archs=()
        for a in "$@"; do
          case "$a" in
            *code=sm_90a) [[ -n "$FAIL_SM90A" ]] && { echo "ptxas fatal : wgmma operand mismatch"; exit 2; }; archs+=(sm_90a) ;;
            *code=sm_*) archs+=("${a##*code=}") ;;
          esac
        done
        [[ -n "$FAIL_ALL" ]] && { echo "error: syntax error in kernel"; exit 1; }
        for s in "${archs[@]}"; do
          echo "ptxas info    : Compiling entry function 'dk_test' for '$s'"
          echo "ptxas info    : Used 32 registers, 0 bytes smem"
        done
        """;

    [Test]
    public void FailedSm90aBuildFallsBackToTheOtherArchs()
    {
        var (dir, log) = Setup();
        var run = Tool(dir, new() { ["FAIL_SM90A"] = "1" }, "run-logged", log, Path.Combine(dir, "nvcc"),
            "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_90a,code=sm_90a");
        Assert.That(run.ExitCode, Is.Zero, run.Output);
        Assert.That(run.Output, Does.Contain("sm_90a build failed"));
        Assert.That(File.ReadAllText(log + ".sm90a-failure.txt"), Does.Contain("wgmma operand mismatch"));
        Assert.That(File.ReadAllText(log), Does.Contain("for 'sm_90'").And.Not.Contain("sm_90a"));

        string report = Path.Combine(dir, "resource-report.json");
        var resources = Tool(dir, [], "resources", log, report, "nvcc 13.0", "sm_90", "sm_90a", "compute_90");
        Assert.That(resources.ExitCode, Is.Zero, resources.Output);
        using var json = JsonDocument.Parse(File.ReadAllText(report));
        var archs = json.RootElement.GetProperty("archs").EnumerateArray().Select(a => a.GetString()).ToArray();
        Assert.That(archs, Is.EqualTo(new[] { "sm_90", "compute_90" }), "an arch the build dropped must not be listed");
        Assert.That(json.RootElement.TryGetProperty("tools", out _), Is.False, "no --tools, no tools folder");

        // --tools names the compiler's own folder, so `profile` disassembles with the matching cuobjdump.
        var withTools = Tool(dir, [], "resources", log, report, "nvcc 13.0", "--tools", "/opt/cuda-13/bin", "sm_90", "compute_90");
        Assert.That(withTools.ExitCode, Is.Zero, withTools.Output);
        using var json2 = JsonDocument.Parse(File.ReadAllText(report));
        Assert.That(json2.RootElement.GetProperty("tools").GetString(), Is.EqualTo("/opt/cuda-13/bin"));
        Assert.That(json2.RootElement.GetProperty("archs").EnumerateArray().Select(a => a.GetString()), Is.EqualTo(new[] { "sm_90", "compute_90" }));

        // A later successful sm_90a build removes the stale failure record.
        var again = Tool(dir, [], "run-logged", log, Path.Combine(dir, "nvcc"),
            "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_90a,code=sm_90a");
        Assert.That(again.ExitCode, Is.Zero, again.Output);
        Assert.That(File.Exists(log + ".sm90a-failure.txt"), Is.False);
        Assert.That(File.ReadAllText(log), Does.Contain("for 'sm_90a'"));
    }

    [Test]
    public void OtherFailuresStillFailTheBuild()
    {
        var (dir, log) = Setup();
        var run = Tool(dir, new() { ["FAIL_ALL"] = "1" }, "run-logged", log, Path.Combine(dir, "nvcc"),
            "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a");
        Assert.That(run.ExitCode, Is.Not.Zero);
        Assert.That(run.Output, Does.Contain("syntax error in kernel"));
    }

    private static (string Dir, string Log) Setup()
    {
        if (OperatingSystem.IsWindows() || !OnPath("python3") || !OnPath("bash"))
            Assert.Ignore("python3, bash and a Unix file system are needed to run the native build tool with a stand-in nvcc");
        string dir = Path.Combine(Path.GetTempPath(), "dk-buildtool-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        string compiler = Path.Combine(dir, "nvcc");
        File.WriteAllText(compiler, FakeCompiler.Replace("\r\n", "\n") + "\n");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(compiler, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return (dir, Path.Combine(dir, "ptxas.log"));
    }

    private static (int ExitCode, string Output) Tool(string dir, Dictionary<string, string> env, params string[] args)
    {
        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
        psi.ArgumentList.Add(Path.Combine(RepositoryRoot(), "cmake", "dk_kernels.py"));
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        Assert.That(p.WaitForExit(60_000), Is.True, "dk_kernels.py did not finish in 60 s");
        return (p.ExitCode, stdout + stderr.Result);
    }

    private static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Any(d => File.Exists(Path.Combine(d, tool)));

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "cmake", "dk_kernels.py"))) return dir.FullName;
        }
        Assert.Ignore("cmake/dk_kernels.py not found above the test assembly: the test needs the source tree.");
        return "";
    }
}
