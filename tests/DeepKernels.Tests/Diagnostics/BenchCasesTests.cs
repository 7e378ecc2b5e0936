using System.Text.Json;
using DeepKernels.Backends.Cpu;
using DeepKernels.Cli;
using DeepKernels.Diagnostics.Benchmarking;
using DeepKernels.Tests.Cuda;

namespace DeepKernels.Tests.Diagnostics;

/// <summary>
/// The bench registry's coverage of issues 5-7 (names and grids, checked by listing, never by
/// timing) and the harness pieces added for them: kernel variants, tokens/s, the time budget and
/// per-case kernel tracing.
/// </summary>
public class BenchCasesTests
{
    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    private static List<string> ListNames(params string[] args)
    {
        var (code, output, err) = Cli(["bench", "--list", .. args]);
        Assert.That(code, Is.EqualTo(0), err);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(l => l[l.IndexOf(' ', StringComparison.Ordinal)..].Trim()).ToList();
    }

    [Test]
    public void UnknownOpNamesEveryOpIncludingTheNewOnes()
    {
        var (code, _, err) = Cli("bench", "--op", "moe");
        Assert.That(code, Is.EqualTo(2));
        foreach (string op in new[] { "moe-layer", "moe-permute", "moe-combine", "rmsnorm", "silu-and-mul", "embedding", "kv-cache-write", "model-decode", "grouped-gemm", "mla-decode" })
            Assert.That(err, Does.Contain(op));
        Assert.That(err, Does.Not.Contain("   at "), "no stack trace");
    }

    [Test]
    public void QuantizationOpsAreBenchmarkedWhereTheyHaveKernels()
    {
        // Weight quantization and dequantization run on both backends (dk_fp8_quantize_weight_blocks,
        // dk_dequantize_weight_fp8); activation dequantization has no CUDA kernel, so no CUDA case.
        var cpu = ListNames("--backend", "cpu", "--op", "weight-quant,weight-dequant,act-dequant");
        var cuda = ListNames("--backend", "cuda", "--op", "weight-quant,weight-dequant,act-dequant");
        Assert.That(cpu, Does.Contain("weight-quant N=4096 K=7168").And.Contain("weight-dequant N=7168 K=2048").And.Contain("act-dequant M=4096 K=7168"));
        Assert.That(cuda, Does.Contain("weight-quant N=2112 K=7168").And.Contain("weight-dequant N=4096 K=7168"));
        Assert.That(cuda.Any(n => n.StartsWith("act-dequant", StringComparison.Ordinal)), Is.False);
        var quant = OpBenchRegistry.ForOp("weight-quant").Single(c => c.Name == "weight-quant N=7168 K=2048");
        Assert.That(quant.Bytes, Is.EqualTo(7168.0 * 2048 * 3 + 4.0 * 56 * 16), "BF16 read, FP8 written, one FP32 scale per 128x128 block");

        string json = Path.Combine(Path.GetTempPath(), $"dk-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = Cli("bench", "--backend", "cpu", "--op", "act-dequant", "--case", "act-dequant M=128 K=7168", "--repeats", "2", "--warmup", "0", "--json", json);
            Assert.That(code, Is.EqualTo(0), err + output);
            var result = BenchReport.FromJson(File.ReadAllText(json)).Results.Single();
            Assert.That(result.GBps, Is.Positive);
            Assert.That(result.Bytes, Is.EqualTo(128.0 * 7168 * 5 + 4.0 * 128 * 56));
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Test]
    public void CudaListHasBothGemmKernelsAtEveryShape()
    {
        var names = ListNames("--backend", "cuda", "--op", "gemm");
        Assert.That(names.Count(n => n.EndsWith(" portable", StringComparison.Ordinal)), Is.EqualTo(42));
        Assert.That(names.Count(n => n.EndsWith(" sm90", StringComparison.Ordinal)), Is.EqualTo(42));
        Assert.That(names, Does.Contain("gemm M=4096 N=7168 K=16384 sm90"));
        Assert.That(OpBenchRegistry.ForOp("gemm").Where(c => c.Variant == "sm90").Select(c => c.OpVariant).Distinct(), Is.EqualTo(new[] { "gemm/sm90" }));
    }

    [Test]
    public void CudaListHasTheIssueGridsForMlaMoeAndGroupedGemm()
    {
        var mla = ListNames("--backend", "cuda", "--op", "mla-decode");
        Assert.That(mla, Has.Count.EqualTo(128), "the issue's 64 cases, for the portable and the Hopper kernel");
        foreach (string seqlen in new[] { "seqlen=4096", "seqlen=8192", "seqlen=varlen4096", "seqlen=varlen8192" })
            foreach (int h in new[] { 16, 32, 64, 128 })
                foreach (int s in new[] { 1, 2 })
                    foreach (string cache in new[] { "bf16", "fp8" })
                        foreach (string variant in new[] { "portable", "sm90" })
                            Assert.That(mla, Does.Contain($"mla-decode b=128 {seqlen} h_q={h} s_q={s} {cache} {variant}"));
        Assert.That(OpBenchRegistry.ForOp("mla-decode").Where(c => c.RunsOn("cuda")).Select(c => c.OpVariant).Distinct(),
            Is.EquivalentTo(new[] { "mla-decode/portable", "mla-decode/sm90" }));
        var moe = ListNames("--backend", "cuda", "--op", "moe-layer");
        Assert.That(moe, Is.EqualTo(new[] { 1, 16, 128, 4096 }.Select(t => $"moe-layer T={t} E=256 k=8 H=7168 I=2048").ToList()));
        var grouped = ListNames("--backend", "cuda", "--op", "grouped-gemm");
        foreach (string c in new[] { "contiguous G=4 M=16384 N=4096 K=7168", "contiguous G=8 M=32768 N=7168 K=2048", "masked G=1 expected_m=1024", "masked G=4 expected_m=256", "masked G=32 expected_m=192" })
            foreach (string variant in new[] { "portable", "sm90" })
                Assert.That(grouped.Any(n => n.Contains(c, StringComparison.Ordinal) && n.EndsWith(" " + variant, StringComparison.Ordinal)), Is.True, $"{c} {variant}");
        Assert.That(grouped, Has.Count.EqualTo(20));
    }

    [Test]
    public void CpuDefaultIsReducedAndFullAddsTheGrids()
    {
        var reduced = ListNames("--backend", "cpu");
        var full = ListNames("--backend", "cpu", "--full");
        Assert.That(reduced.Count(n => n.StartsWith("mla-decode", StringComparison.Ordinal)), Is.EqualTo(4));
        Assert.That(full.Count(n => n.StartsWith("mla-decode", StringComparison.Ordinal)), Is.EqualTo(68));
        Assert.That(reduced, Does.Not.Contain("moe-layer T=4096 E=16 k=8 H=7168 I=2048 cpu"));
        Assert.That(full, Does.Contain("moe-layer T=4096 E=16 k=8 H=7168 I=2048 cpu"));
        Assert.That(reduced, Is.SubsetOf(full));
        Assert.That(reduced, Does.Contain("model-decode tiny batch=64"));
        Assert.That(reduced, Does.Contain("kv-cache-write n=128 fp8"));
    }

    [Test]
    public void BudgetRunsTheSmallestCaseOfEveryOpAndVariantFirst()
    {
        var names = ListNames("--backend", "cuda", "--budget-s", "60");
        var first = ListNames("--backend", "cuda", "--smallest");
        Assert.That(first, Does.Contain("model-decode tiny batch=1"));
        Assert.That(names.Take(first.Count), Is.EquivalentTo(first));
        Assert.That(names.Distinct().Count(), Is.EqualTo(names.Count), "every case once");
        Assert.That(names, Is.EquivalentTo(ListNames("--backend", "cuda")), "nothing lost");
    }

    [Test]
    public void SmallestGivesOneCasePerOpAndKernelVariant()
    {
        var names = ListNames("--backend", "cuda", "--smallest");
        Assert.That(names.Where(n => n.StartsWith("gemm ", StringComparison.Ordinal)), Is.EqualTo(new[] { "gemm M=1 N=7168 K=2048 portable", "gemm M=1 N=7168 K=2048 sm90" }));
    }

    [Test]
    public void ExactCaseNameWinsOverSubstringMatches()
    {
        var names = ListNames("--backend", "cuda", "--case", "gemm M=1 N=2112 K=7168 portable");
        Assert.That(names, Is.EqualTo(new[] { "gemm M=1 N=2112 K=7168 portable" }));
    }

    [Test]
    public void RmsNormRunReportsTheDesignBytes()
    {
        string json = Path.Combine(Path.GetTempPath(), $"dk-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = Cli("bench", "--op", "rmsnorm", "--case", "rmsnorm T=1 H=7168", "--repeats", "1", "--warmup", "0", "--json", json);
            Assert.That(code, Is.EqualTo(0), err + output);
            var r = BenchReport.FromJson(File.ReadAllText(json)).Results.Single();
            Assert.That(r.Bytes, Is.EqualTo(2.0 * 7168 * 4 + 7168 * 2));
            Assert.That(r.GBps, Is.EqualTo(r.Bytes / (r.MedianMs / 1e3) / 1e9).Within(1e-9).Percent);
            Assert.That(r.TokensPerSecond, Is.Null);
            Assert.That(r.Kernels, Is.Empty, "nothing is traced on the CPU");
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Test]
    public void ModelDecodePrintsTokensPerSecond()
    {
        string json = Path.Combine(Path.GetTempPath(), $"dk-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = Cli("bench", "--op", "model-decode", "--case", "batch=8", "--repeats", "1", "--warmup", "0", "--json", json);
            Assert.That(code, Is.EqualTo(0), err + output);
            Assert.That(output, Does.Contain("tok/s"));
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var r = doc.RootElement.GetProperty("results")[0];
            Assert.That(r.GetProperty("tokensPerSecond").GetDouble(), Is.EqualTo(8 / (r.GetProperty("medianMs").GetDouble() / 1e3)).Within(1e-6).Percent);
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Test]
    public void SummarizeComputesTokensPerSecondAndKeepsTheVariant()
    {
        var c = new OpBenchCase("x", "x", new Dictionary<string, long>(), 1e9, 1e9, MathPrecision.Fp8, BenchTargets.All, _ => throw new NotSupportedException())
        {
            TokensPerRun = 64,
            Variant = "sm90",
        };
        var r = BenchRunner.Summarize(c, [4.0, 2.0, 3.0], BenchLimits.None);
        Assert.That(r.TokensPerSecond, Is.EqualTo(64 / 0.003).Within(1e-9).Percent);
        Assert.That(r.Variant, Is.EqualTo("sm90"));
    }

    [TestCase("gemm", KernelVariantScope.GemmVariable)]
    [TestCase("grouped-gemm", KernelVariantScope.GemmVariable)]
    [TestCase("mla-decode", KernelVariantScope.MlaVariable)]
    public void VariantIsPinnedThroughTheOpsVariableOnlyWhileTheCaseRuns(string op, string name)
    {
        string? before = Environment.GetEnvironmentVariable(name);
        try
        {
            Environment.SetEnvironmentVariable(name, "auto");
            string? seen = null;
            var c = new OpBenchCase(op, "x", new Dictionary<string, long>(), 1, 1, MathPrecision.Fp8, BenchTargets.All,
                _ => new DelegateBenchInstance(() => seen = Environment.GetEnvironmentVariable(name))) { Variant = "portable" };
            BenchRunner.Run(c, CpuBackend.Default, new StopwatchTimer(), BenchLimits.None, 0, 1);
            Assert.That(seen, Is.EqualTo("portable"));
            Assert.That(Environment.GetEnvironmentVariable(name), Is.EqualTo("auto"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(name, before);
        }
        Assert.Throws<ArgumentException>(() => KernelVariantScope.VariableFor("rmsnorm"));
    }

    [Test]
    public unsafe void TraceRecordsLaunchedKernelsPerCase()
    {
        using var fake = new FakeCudaDriver();
        var trace = new KernelTraceDriver(fake);
        nint a = trace.GetFunction(1, "dk_a"), b = trace.GetFunction(1, "dk_b");
        void Launch(nint f) => trace.LaunchKernel(f, new(1), new(32), 0, 0, null, new(1));
        OpBenchCase Case(params nint[] functions) => new("x", "x", new Dictionary<string, long>(), 1, 1, MathPrecision.Fp32, BenchTargets.All,
            _ => new DelegateBenchInstance(() => { foreach (var f in functions) Launch(f); }));

        var first = BenchRunner.Run(Case(b, a, b), CpuBackend.Default, new StopwatchTimer(), BenchLimits.None, 0, 1, trace);
        var second = BenchRunner.Run(Case(a), CpuBackend.Default, new StopwatchTimer(), BenchLimits.None, 0, 1, trace);
        Assert.That(first.Kernels, Is.EqualTo(new[] { "dk_a", "dk_b" }));
        Assert.That(second.Kernels, Is.EqualTo(new[] { "dk_a" }), "cleared between cases");
        Assert.That(fake.Launches, Has.Count.GreaterThanOrEqualTo(4), "launches reach the wrapped driver");
        Launch(0x1234567);
        Assert.That(trace.Launched, Does.Contain("<function 0x1234567>"));
    }
}
