using System.Diagnostics;
using System.Text.Json;
using DeepKernels.Cli;
using DeepKernels.Diagnostics.Profiling;

namespace DeepKernels.Tests.Diagnostics;

public class ProfilingTests
{
    // Shortened real output of `cuobjdump -res-usage` / `-sass` (nvcc 11.8) for a small kernel.
    private const string ResUsage = """

        Fatbin elf code:
        ================
        arch = sm_80
        code version = [1,7]
        host = linux
        compile_size = 64bit

        Resource usage:
         Common:
          GLOBAL:0
         Function dk_test_kernel:
          REG:10 STACK:0 SHARED:512 LOCAL:0 CONSTANT[0]:372 TEXTURE:0 SURFACE:0 SAMPLER:0

        Fatbin ptx code:
        ================
        arch = sm_90
        code version = [7,8]

        Fatbin elf code:
        ================
        arch = sm_90a
        code version = [1,7]

        Resource usage:
         Function dk_other:
          REG:168 STACK:16 SHARED:1536 LOCAL:0 CONSTANT[0]:548 TEXTURE:0 SURFACE:0 SAMPLER:0
        """;

    private const string Sass = """
        Fatbin elf code:
        ================
        arch = sm_80

        	code for sm_80
        		Function : dk_test_kernel
        	.headerflags    @"EF_CUDA_SM80 EF_CUDA_PTX_SM(EF_CUDA_SM80)"
                /*0000*/                   MOV R1, c[0x0][0x28] ;                        /* 0x00000a0000017a02 */
                                                                                         /* 0x000fc40000000f00 */
                /*00e0*/                   LDG.E R2, [R2.64] ;                           /* 0x0000000402027981 */
                /*00f0*/               @P0 LDG.E.128 R4, [R2.64] ;                       /* 0x0000000402027981 */
                /*0100*/                   STS [R5.X4], R2 ;                             /* 0x0000000205007388 */
                /*0110*/                   BAR.SYNC 0x0 ;                                /* 0x0000000000007b1d */
                /*0120*/                   LDS R3, [R4] ;                                /* 0x0000000004037984 */
                /*0130*/                   FFMA R3, R2, R3, 1 ;                          /* 0x0000000004037984 */
                /*0140*/              @!P1 SHFL.BFLY PT, R6, R3, 0x1, 0x1f ;             /* 0x0c201f0003067f89 */
                /*0150*/                   HMMA.16816.F32.BF16 R8, R12, R16, R8 ;       /* 0x0c201f0003067f89 */
                /*0160*/                   EXIT ;                                        /* 0x000000000000794d */
        		..........

        	code for sm_90a
        		Function : dk_other
                /*0000*/                   HGMMA.64x128x32.F32.E4M3.E4M3 gdesc[UR4], RZ, !UPT ;  /* 0x0 */
                /*0010*/              @UP0 UTMALDG.2D [UR8], [UR4] ;                     /* 0x0 */
                /*0020*/                   LDGSTS.E.BYPASS.128 [R1], [R2.64] ;           /* 0x0 */
                /*0030*/                   HGMMA.64x128x32.F32.E4M3.E4M3 gdesc[UR4], R24, gsb0 ;  /* 0x0 */
        """;

    [Test]
    public void ParsesCuobjdumpResourceUsagePerArch()
    {
        var r = KernelResourceReader.ParseCuobjdumpResUsage(ResUsage);
        Assert.That(r, Has.Count.EqualTo(2));
        Assert.That(r[0], Is.EqualTo(new KernelResources("dk_test_kernel", "sm_80", 10, 512, 0, 0, 0, "cuobjdump")));
        Assert.That(r[1], Is.EqualTo(new KernelResources("dk_other", "sm_90a", 168, 1536, 16, 0, 0, "cuobjdump")));
    }

    [Test]
    public void CountsSassOpcodesPerKernelAndArch()
    {
        var mixes = SassParser.Parse(Sass);
        Assert.That(mixes.Select(m => (m.Kernel, m.Arch)), Is.EqualTo(new[] { ("dk_test_kernel", "sm_80"), ("dk_other", "sm_90a") }));
        var a = mixes[0];
        Assert.That(a.Total, Is.EqualTo(10));
        Assert.That(a.Count("LDG"), Is.EqualTo(2), "predicated and widened loads count as LDG");
        Assert.That(a.Count("STS"), Is.EqualTo(1));
        Assert.That(a.Count("LDS"), Is.EqualTo(1));
        Assert.That(a.Count("BAR"), Is.EqualTo(1));
        Assert.That(a.Count("FFMA"), Is.EqualTo(1));
        Assert.That(a.Count("SHFL"), Is.EqualTo(1));
        Assert.That(a.Count("HMMA"), Is.EqualTo(1));
        Assert.That(a.Count("HGMMA"), Is.EqualTo(0));
        var b = mixes[1];
        Assert.That(b.Count("HGMMA"), Is.EqualTo(2));
        Assert.That(b.Count("UTMALDG"), Is.EqualTo(1));
        Assert.That(b.Count("LDGSTS"), Is.EqualTo(1));
        Assert.That(b.Count("LDG"), Is.EqualTo(0), "LDGSTS is not LDG");
    }

    [Test]
    public void ReadsResourceReportInSeveralLayouts()
    {
        string list = """{"kernels":[{"kernel":"k1","arch":"sm_90","registers":40,"static_smem":2048,"stack_frame":8,"spill_stores":4,"spill_loads":12}]}""";
        string nested = """{"k1":{"sm_90":{"regs":40,"smem":2048,"stack":8,"spillStores":4,"spillLoads":12}}}""";
        string array = """[{"name":"k1","arch":90,"numRegs":40,"sharedBytes":2048,"stackBytes":8,"spillStoreBytes":4,"spillLoadBytes":12}]""";
        var expected = new KernelResources("k1", "sm_90", 40, 2048, 8, 4, 12, "resource-report");
        foreach (string json in new[] { list, nested, array })
            Assert.That(KernelResourceReader.ParseReport(json).Single(), Is.EqualTo(expected), json);
        Assert.Throws<InvalidDataException>(() => KernelResourceReader.ParseReport("{}"));
        Assert.Throws<InvalidDataException>(() => KernelResourceReader.ParseReport("{oops"));
    }

    // Hand-worked with the CUDA occupancy calculator's rules.
    [TestCase("sm_90", 128, 32, 0, 0, 16, 1.0, OccupancyLimiter.Warps)]          // 4 warps/block: 64/4 = 16 blocks
    [TestCase("sm_80", 256, 255, 0, 0, 1, 0.125, OccupancyLimiter.Registers)]    // 255*32 -> 8192 regs/warp: 8 warps
    [TestCase("sm_90", 128, 32, 100 * 1024, 0, 2, 0.125, OccupancyLimiter.SharedMemory)] // (102400+1024) -> 2 blocks in 228 KiB
    [TestCase("sm_80", 128, 32, 0, 100 * 1024, 1, 0.0625, OccupancyLimiter.SharedMemory)] // 164 KiB holds one
    [TestCase("sm_89", 32, 16, 0, 0, 24, 0.5, OccupancyLimiter.Blocks)]          // 24 blocks x 1 warp of 48
    [TestCase("sm_86", 512, 64, 0, 0, 2, 32.0 / 48, OccupancyLimiter.Registers)]  // 64*32=2048/warp -> 32 warps -> 2 blocks of 16 (warps allow 3)
    public void OccupancyFollowsTheCalculator(string arch, int block, int regs, int smem, int dyn, int blocks, double fraction, OccupancyLimiter limiter)
    {
        var o = Occupancy.Compute(ArchLimits.Find(arch)!, block, regs, smem, dyn);
        Assert.That(o.BlocksPerSm, Is.EqualTo(blocks));
        Assert.That(o.Fraction, Is.EqualTo(fraction).Within(1e-12));
        Assert.That(o.Limiter, Is.EqualTo(limiter));
    }

    [Test]
    public void ProfileCommandRejectsUnknownKernelAndArch()
    {
        // --no-sass: these checks need no disassembly of the build's fatbin (about 30 s each here).
        string report = WriteTemp("""[{"kernel":"dk_quantize_act_fp8","arch":"sm_90","registers":30,"static_smem":0,"stack":0,"spill_stores":0,"spill_loads":0}]""");
        try
        {
            var (code, _, err) = Cli("profile", "--report", report, "--kernel", "nope", "--no-sass");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("unknown kernel 'nope'").And.Contain("dk_quantize_act_fp8"));
            (code, _, err) = Cli("profile", "--report", report, "--arch", "sm_90a", "--no-sass");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("'sm_90a' is not in the fatbin/report").And.Contain("sm_90"));
            (code, _, err) = Cli("profile", "--report", "/nonexistent/report.json");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("does not exist"));
        }
        finally
        {
            File.Delete(report);
        }
    }

    [Test]
    public void ProfileCommandComputesOccupancyFromTheReport()
    {
        string report = WriteTemp("""[{"kernel":"dk_quantize_act_fp8","arch":"sm_90","registers":30,"static_smem":0,"stack":0,"spill_stores":0,"spill_loads":0}]""");
        try
        {
            var (code, output, err) = Cli("profile", "--report", report, "--kernel", "dk_quantize_act_fp8", "--arch", "sm_90", "--json", "--no-sass");
            Assert.That(code, Is.EqualTo(0), err);
            using var doc = JsonDocument.Parse(output);
            var k = doc.RootElement.GetProperty("kernels")[0];
            Assert.That(k.GetProperty("resources").GetProperty("registers").GetInt32(), Is.EqualTo(30));
            Assert.That(k.GetProperty("launch").GetProperty("blockSize").GetInt32(), Is.EqualTo(128));
            Assert.That(k.GetProperty("occupancy").GetProperty("fraction").GetDouble(), Is.EqualTo(1.0));
        }
        finally
        {
            File.Delete(report);
        }
    }

    [Test]
    public void DisassemblesWithTheCuobjdumpOfTheCompilerThatBuiltTheFatbin()
    {
        string tools = Directory.CreateTempSubdirectory("dk-tools-").FullName;
        try
        {
            string own = Path.Combine(tools, "cuobjdump");
            File.WriteAllText(own, "");
            Assert.That(DeepKernels.Diagnostics.Profiling.KernelProfiler.CompilerCuobjdump($$"""{"compiler":"nvcc 12.4","tools":"{{tools}}","kernels":[]}"""), Is.EqualTo(own));
            // Gone, absent, or not a report: fall back to PATH (null here).
            Assert.That(DeepKernels.Diagnostics.Profiling.KernelProfiler.CompilerCuobjdump("""{"compiler":"nvcc 12.4","tools":"/no/such/dir"}"""), Is.Null);
            Assert.That(DeepKernels.Diagnostics.Profiling.KernelProfiler.CompilerCuobjdump("""{"compiler":"nvcc 11.8"}"""), Is.Null);
            Assert.That(DeepKernels.Diagnostics.Profiling.KernelProfiler.CompilerCuobjdump("""[{"kernel":"k"}]"""), Is.Null);
            Assert.That(DeepKernels.Diagnostics.Profiling.KernelProfiler.CompilerCuobjdump("{not json"), Is.Null);
        }
        finally
        {
            Directory.Delete(tools, recursive: true);
        }
    }

    [Test]
    public void JsonOutWritesTheJsonBesideTheTableFromOneRun()
    {
        string report = WriteTemp("""[{"kernel":"dk_quantize_act_fp8","arch":"sm_90","registers":30,"static_smem":0,"stack":0,"spill_stores":0,"spill_loads":0}]""");
        string json = Path.Combine(Path.GetTempPath(), $"dk-profile-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = Cli("profile", "--report", report, "--kernel", "dk_quantize_act_fp8", "--arch", "sm_90", "--no-sass", "--json-out", json);
            Assert.That(code, Is.EqualTo(0), err);
            Assert.That(output, Does.Contain("dk_quantize_act_fp8").And.Contain("Resources:"), "the table still goes to stdout");
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            Assert.That(doc.RootElement.GetProperty("kernels")[0].GetProperty("resources").GetProperty("registers").GetInt32(), Is.EqualTo(30));
            Assert.That(doc.RootElement.GetProperty("notes").EnumerateArray().Select(n => n.GetString()), Does.Contain("SASS instruction mix not asked for (--no-sass)."));

            (code, _, err) = Cli("profile", "--report", report, "--no-sass", "--json-out", Path.Combine(json, "no", "such", "dir.json"));
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("cannot write --json-out"));
        }
        finally
        {
            File.Delete(report);
            File.Delete(json);
        }
    }

    [Test]
    public void ProfilesARealFatbinBuiltWithNvcc()
    {
        string? nvcc = FindOnPath("nvcc");
        string? cuobjdump = KernelProfiler.FindCuobjdump();
        if (nvcc is null || cuobjdump is null) Assert.Ignore("nvcc or cuobjdump is not installed");
        string dir = Directory.CreateTempSubdirectory("dk-profile-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "k.cu"), """
                extern "C" __global__ void dk_quantize_act_fp8(const float* x, float* y, int n) {
                  __shared__ float s[128];
                  int i = blockIdx.x * blockDim.x + threadIdx.x;
                  float v = i < n ? x[i] : 0.f;
                  s[threadIdx.x] = v; __syncthreads();
                  v = fmaf(v, s[(threadIdx.x + 1) % 128], 1.f);
                  v += __shfl_xor_sync(0xffffffff, v, 1);
                  if (i < n) y[i] = v;
                }
                """);
            var args = new List<string> { "-fatbin", "-gencode", "arch=compute_80,code=sm_80", "-o", Path.Combine(dir, "k.fatbin"), Path.Combine(dir, "k.cu") };
            if (FindOnPath("clang++-14") is not null) args.InsertRange(0, ["-ccbin", "clang++-14"]);
            var psi = new ProcessStartInfo(nvcc!) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (string a in args) psi.ArgumentList.Add(a);
            using (var p = Process.Start(psi)!)
            {
                string err = p.StandardError.ReadToEnd();
                p.WaitForExit();
                if (p.ExitCode != 0) Assert.Ignore($"nvcc could not build the test kernel here: {err}");
            }
            var (code, output, error) = Cli("profile", "--fatbin", Path.Combine(dir, "k.fatbin"), "--json");
            Assert.That(code, Is.EqualTo(0), error);
            using var doc = JsonDocument.Parse(output);
            var k = doc.RootElement.GetProperty("kernels")[0];
            Assert.That(k.GetProperty("arch").GetString(), Is.EqualTo("sm_80"));
            Assert.That(k.GetProperty("resources").GetProperty("staticSharedBytes").GetInt64(), Is.EqualTo(512));
            var counts = k.GetProperty("sass").GetProperty("byOpcode");
            Assert.That(counts.GetProperty("BAR").GetInt32(), Is.EqualTo(1));
            Assert.That(counts.GetProperty("SHFL").GetInt32(), Is.EqualTo(1));
            Assert.That(counts.GetProperty("STS").GetInt32(), Is.GreaterThanOrEqualTo(1));
            Assert.That(k.GetProperty("occupancy").GetProperty("blocksPerSm").GetInt32(), Is.EqualTo(16));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void ProfilesTheFatbinTheBuildProduced()
    {
        string? native = KernelProfiler.FindNativeBuildDir(TestContext.CurrentContext.TestDirectory);
        string? fatbin = native is null ? null : Path.Combine(native, "deepkernels.fatbin");
        if (fatbin is null || !File.Exists(fatbin)) Assert.Ignore("build/native/deepkernels.fatbin was not built (no nvcc, or native build not run)");
        if (KernelProfiler.FindCuobjdump() is null) Assert.Ignore("cuobjdump is not installed");
        var (code, output, error) = Cli("profile", "--fatbin", fatbin!, "--json");
        Assert.That(code, Is.EqualTo(0), error);
        using var doc = JsonDocument.Parse(output);
        var kernels = doc.RootElement.GetProperty("kernels").EnumerateArray().ToList();
        Assert.That(kernels.Select(k => k.GetProperty("kernel").GetString()), Does.Contain("dk_quantize_act_fp8"));
        foreach (var k in kernels)
        {
            Assert.That(k.GetProperty("sass").ValueKind, Is.EqualTo(JsonValueKind.Object), $"SASS mix for {k.GetProperty("kernel")} {k.GetProperty("arch")}");
            Assert.That(k.GetProperty("sass").GetProperty("total").GetInt32(), Is.GreaterThan(0));
        }
        var (code2, _, err2) = Cli("profile", "--fatbin", fatbin!, "--arch", "sm_10");
        Assert.That(code2, Is.EqualTo(2), err2);
    }

    private static string WriteTemp(string text)
    {
        string path = Path.Combine(Path.GetTempPath(), $"dk-report-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, text);
        return path;
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    private static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }
}
