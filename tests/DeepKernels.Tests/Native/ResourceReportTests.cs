using System.Text.Json;

namespace DeepKernels.Tests.Native;

/// <summary>
/// The native build's reports (build/native): every kernel in kernel-signatures.json has a
/// resource-report entry for each SASS arch in the fatbin, and none spills registers.
/// </summary>
public class ResourceReportTests
{
    private static DirectoryInfo? FindNativeBuild()
    {
        string? overrideDir = Environment.GetEnvironmentVariable("DEEPKERNELS_NATIVE_BUILD_DIR");
        if (!string.IsNullOrEmpty(overrideDir)) return new DirectoryInfo(overrideDir);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = new DirectoryInfo(Path.Combine(dir.FullName, "build", "native"));
            if (File.Exists(Path.Combine(candidate.FullName, "kernel-signatures.json"))) return candidate;
        }
        return null;
    }

    private static (DirectoryInfo Dir, JsonDocument Signatures, JsonDocument Report) LoadOrSkip()
    {
        var dir = FindNativeBuild();
        if (dir is null) Assert.Ignore("no native build (build/native/kernel-signatures.json): run ./build.sh build");
        if (!File.Exists(Path.Combine(dir!.FullName, "deepkernels.fatbin")))
            Assert.Ignore($"no fatbin in {dir.FullName}: nvcc was not found when the native build ran");
        var signatures = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "kernel-signatures.json")));
        var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "resource-report.json")));
        return (dir, signatures, report);
    }

    [Test]
    public void EveryKernelHasAnEntryForEveryBuiltSassArch()
    {
        var (_, signatures, report) = LoadOrSkip();
        var archs = report.RootElement.GetProperty("archs").EnumerateArray().Select(a => a.GetString()!).ToList();
        var sass = archs.Where(a => a.StartsWith("sm_", StringComparison.Ordinal)).ToList();
        Assert.That(sass, Does.Contain("sm_80").And.Contain("sm_90"));
        Assert.That(archs, Does.Contain("compute_90"));
        Assert.That(report.RootElement.GetProperty("compiler").GetString(), Does.StartWith("nvcc "));
        var entries = report.RootElement.GetProperty("kernels").EnumerateArray()
            .Select(e => (Name: e.GetProperty("name").GetString()!, Arch: e.GetProperty("arch").GetString()!)).ToHashSet();
        var kernels = signatures.RootElement.GetProperty("kernels").EnumerateArray().Select(k => k.GetProperty("name").GetString()!).ToList();
        Assert.That(kernels, Does.Contain("dk_quantize_act_fp8").And.Contain("dk_dequantize_weight_fp8"));
        foreach (string kernel in kernels)
            foreach (string arch in sass)
                Assert.That(entries, Does.Contain((kernel, arch)), $"{kernel} has no resource entry for {arch}");
        Assert.That(entries.Select(e => e.Name).Distinct(), Is.SubsetOf(kernels), "the report names kernels the signature table lacks");
    }

    [Test]
    public void HopperKernelsAssembleForSm90aWithWgmmaAndTmaAndNoSpills()
    {
        // With nvcc >= 12.3 (CI fetches Debian's 12.4, tools/nvcc12/fetch.sh) ptxas assembles the
        // sm_90a kernels: each must fit the 168 registers its __launch_bounds__(384, 1) allows at
        // entry without spilling, and its SASS must hold the wgmma (QGMMA for FP8, HGMMA for BF16)
        // and TMA (UTMALDG) instructions, and the setmaxnreg (USETMAXREG) the warp roles rely on.
        var (dir, _, report) = LoadOrSkip();
        var archs = report.RootElement.GetProperty("archs").EnumerateArray().Select(a => a.GetString()!).ToList();
        if (!archs.Contains("sm_90a"))
            Assert.Ignore($"this build has no sm_90a ({report.RootElement.GetProperty("compiler").GetString()}; nvcc >= 12.3 builds it: tools/nvcc12/fetch.sh)");
        var hopper = new Dictionary<string, string>
        {
            ["dk_fp8_gemm_sm90"] = "QGMMA", ["dk_grouped_gemm_contiguous_sm90"] = "QGMMA",
            ["dk_grouped_gemm_masked_sm90"] = "QGMMA", ["dk_mla_decode_sm90"] = "HGMMA",
        };
        var entries = report.RootElement.GetProperty("kernels").EnumerateArray()
            .Where(e => e.GetProperty("arch").GetString() == "sm_90a").ToDictionary(e => e.GetProperty("name").GetString()!);
        foreach (string kernel in hopper.Keys)
        {
            Assert.That(entries.ContainsKey(kernel), Is.True, $"{kernel} has no sm_90a entry");
            var e = entries[kernel];
            Assert.That(e.GetProperty("registers").GetInt32(), Is.InRange(1, 168), $"{kernel} registers");
            Assert.That(e.GetProperty("spill_stores").GetInt32() + e.GetProperty("spill_loads").GetInt32() + e.GetProperty("stack_bytes").GetInt32(), Is.Zero, $"{kernel} spills or uses a stack");
        }

        var profile = DeepKernels.Diagnostics.Profiling.KernelProfiler.Collect(new(
            Path.Combine(dir.FullName, "resource-report.json"), Path.Combine(dir.FullName, "deepkernels.fatbin")));
        if (profile.SassTool is null) Assert.Ignore("no cuobjdump: " + string.Join(" ", profile.Notes));
        foreach (var (kernel, mma) in hopper)
        {
            var mix = profile.Kernels.Single(k => k.Kernel == kernel && k.Arch == "sm_90a").Sass;
            Assert.That(mix, Is.Not.Null, $"{kernel}: no SASS for sm_90a (cuobjdump {profile.SassTool})");
            Assert.That(mix!.Count(mma), Is.Positive, $"{kernel}: no {mma} in its sm_90a SASS");
            Assert.That(mix.Count("UTMALDG"), Is.Positive, $"{kernel}: no TMA load");
            Assert.That(mix.Count("USETMAXREG"), Is.Positive, $"{kernel}: setmaxnreg was dropped (ptxas warning C7508?)");
            Assert.That(mix.Count("LDL") + mix.Count("STL"), Is.Zero, $"{kernel}: local memory traffic");
        }
    }

    [Test]
    public void NoKernelSpillsRegisters()
    {
        var (_, _, report) = LoadOrSkip();
        foreach (var e in report.RootElement.GetProperty("kernels").EnumerateArray())
        {
            string what = $"{e.GetProperty("name").GetString()} on {e.GetProperty("arch").GetString()}";
            Assert.That(e.GetProperty("spill_stores").GetInt32(), Is.Zero, $"{what} spills stores");
            Assert.That(e.GetProperty("spill_loads").GetInt32(), Is.Zero, $"{what} spills loads");
            Assert.That(e.GetProperty("registers").GetInt32(), Is.InRange(1, 255), what);
        }
    }

    [Test]
    public void SignaturesDescribeTheQuantizationKernel()
    {
        var (_, signatures, _) = LoadOrSkip();
        var quantize = signatures.RootElement.GetProperty("kernels").EnumerateArray().Single(k => k.GetProperty("name").GetString() == "dk_quantize_act_fp8");
        var parameters = quantize.GetProperty("params").EnumerateArray()
            .Select(p => (p.GetProperty("name").GetString(), p.GetProperty("type").GetString(), p.GetProperty("size").GetInt32())).ToArray();
        Assert.That(parameters, Is.EqualTo(new (string?, string?, int)[]
        {
            ("x", "const void*", 8), ("x_is_bf16", "int", 4), ("q", "unsigned char*", 8), ("scales", "void*", 8),
            ("scales_ue8m0", "int", 4), ("m", "int", 4), ("k", "int", 4),
        }));
    }
}
