using System.Text.Json;
using DeepKernels.Cli;
using DeepKernels.Cuda;
using DeepKernels.Diagnostics.Profiling;
using DeepKernels.Tests.Cuda;

namespace DeepKernels.Tests.Diagnostics;

/// <summary>Occupancy from the driver (cuOccupancyMaxActiveBlocksPerMultiprocessor) versus the arch tables, over the fake driver.</summary>
public class DeviceOccupancyTests
{
    // dk_quantize_act_fp8 (128 threads, no dynamic smem) and dk_fp8_gemm (256 threads, 96 KiB dynamic) for sm_80 and sm_90.
    private const string Report = """
        [{"kernel":"dk_quantize_act_fp8","arch":"sm_80","registers":32,"static_smem":0,"stack":0,"spill_stores":0,"spill_loads":0},
         {"kernel":"dk_quantize_act_fp8","arch":"sm_90","registers":32,"static_smem":0,"stack":0,"spill_stores":0,"spill_loads":0},
         {"kernel":"dk_fp8_gemm","arch":"sm_90","registers":128,"static_smem":0,"stack":0,"spill_stores":0,"spill_loads":0}]
        """;

    private static (string Report, string Fatbin) Files()
    {
        string dir = Directory.CreateTempSubdirectory("dk-occ-").FullName;
        string report = Path.Combine(dir, "resource-report.json");
        File.WriteAllText(report, Report);
        string fatbin = Path.Combine(dir, "deepkernels.fatbin");
        File.WriteAllBytes(fatbin, [1, 2, 3]);
        return (report, fatbin);
    }

    [Test]
    public void DriverAnswersForTheDeviceArchAndTablesForTheRest()
    {
        var (report, fatbin) = Files();
        try
        {
            using var fake = new FakeCudaDriver { OccupancyBlocks = 3 };
            var profile = KernelProfiler.Collect(new ProfileOptions(report, fatbin, CuobjdumpPath: "", Driver: fake));
            var act90 = profile.Kernels.Single(k => k.Kernel == "dk_quantize_act_fp8" && k.Arch == "sm_90");
            var act80 = profile.Kernels.Single(k => k.Kernel == "dk_quantize_act_fp8" && k.Arch == "sm_80");
            var gemm = profile.Kernels.Single(k => k.Kernel == "dk_fp8_gemm");

            Assert.That(act90.OccupancySource, Is.EqualTo(KernelProfiler.OccupancyFromDriver));
            Assert.That(act90.Occupancy!.BlocksPerSm, Is.EqualTo(3));
            Assert.That(act90.Occupancy.WarpsPerSm, Is.EqualTo(12));
            Assert.That(act90.Occupancy.Fraction, Is.EqualTo(12.0 / 64));
            Assert.That(act90.Occupancy.Limiter, Is.Null, "the table says 16 blocks, the driver 3: no limiter to claim");
            Assert.That(act80.OccupancySource, Is.EqualTo(KernelProfiler.OccupancyFromArchTable));
            Assert.That(act80.Occupancy!.BlocksPerSm, Is.EqualTo(16));
            Assert.That(gemm.OccupancySource, Is.EqualTo(KernelProfiler.OccupancyFromDriver));
            // The query carries the launch configuration, after the dynamic shared memory opt-in.
            Assert.That(fake.OccupancyQueries, Does.Contain((256, (nuint)98304)).And.Contain((128, (nuint)0)));
            Assert.That(fake.AttributesSet.Select(a => (a.Attribute, a.Value)), Does.Contain((CudaFunctionAttribute.MaxDynamicSharedSizeBytes, 98304)));
            Assert.That(profile.Notes, Has.Some.Contains("from the driver"));
            Assert.That(fake.CallCount("loadModule"), Is.EqualTo(1));
            Assert.That(fake.CallCount("unloadModule"), Is.EqualTo(1));
            Assert.That(fake.CallCount("release"), Is.EqualTo(fake.CallCount("retain")));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(report)!, true);
        }
    }

    [Test]
    public void WithoutAReadyDeviceTheTablesAnswerAndTheNoteSaysWhy()
    {
        var (report, fatbin) = Files();
        try
        {
            // The recording fake reports no devices.
            var profile = KernelProfiler.Collect(new ProfileOptions(report, fatbin, CuobjdumpPath: "", Driver: new RecordingCudaDriver()));
            Assert.That(profile.Kernels.Select(k => k.OccupancySource), Is.All.EqualTo(KernelProfiler.OccupancyFromArchTable));
            Assert.That(profile.Notes, Has.Some.Contains("Occupancy from the arch tables: no ready CUDA device"));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(report)!, true);
        }
    }

    [Test]
    public void ProfileCommandSaysWhichSourceGaveTheFigure()
    {
        var (report, _) = Files();
        try
        {
            var output = new StringWriter();
            var error = new StringWriter();
            int code = Program.Run(["profile", "--report", report, "--kernel", "dk_quantize_act_fp8", "--arch", "sm_90", "--json"], output, error);
            Assert.That(code, Is.EqualTo(0), error.ToString());
            using var doc = JsonDocument.Parse(output.ToString());
            // No GPU on CI machines: the real driver is asked and the tables answer.
            string expected = RealCudaDriver.Default.Probe().IsReady ? KernelProfiler.OccupancyFromDriver : KernelProfiler.OccupancyFromArchTable;
            Assert.That(doc.RootElement.GetProperty("kernels")[0].GetProperty("occupancySource").GetString(), Is.EqualTo(expected).Or.EqualTo(KernelProfiler.OccupancyFromArchTable));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(report)!, true);
        }
    }

    [Test]
    [Category("Cuda")]
    public void EmulatorAnswersFromTheArchTable()
    {
        var cuda = CudaTestBackends.Get();
        if (cuda.Driver is not DeepKernels.Cuda.Emulation.EmulatorDriver) Assert.Ignore("a real device answers for itself");
        // sm_90: 228 KiB per SM / (96 KiB + 1 KiB reserved) = 2 blocks; 256 threads, no smem: 2048/256 = 8 blocks.
        Assert.That(cuda.MaxActiveBlocksPerMultiprocessor("dk_fp8_gemm", 256, 98304), Is.EqualTo(2));
        Assert.That(cuda.MaxActiveBlocksPerMultiprocessor("dk_rms_norm", 256), Is.EqualTo(8));
        Assert.That(cuda.MaxActiveBlocksPerMultiprocessor("dk_rms_norm", 32), Is.EqualTo(32));
    }
}
