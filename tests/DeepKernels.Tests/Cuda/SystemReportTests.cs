using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using DeepKernels.Cli;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Diagnostics;

namespace DeepKernels.Tests.Cuda;

public class SystemReportTests
{
    [Test]
    public void InfoJsonMatchesTheProbeAndTheMachine()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int rc = Program.Run(["info", "--json"], output, error);
        Assert.That(rc, Is.EqualTo(0), error.ToString());
        using var doc = JsonDocument.Parse(output.ToString());
        var root = doc.RootElement;
        Assert.That(root.GetProperty("runtime").GetProperty("framework").GetString(), Is.EqualTo(RuntimeInformation.FrameworkDescription));
        var cpu = root.GetProperty("cpu");
        Assert.That(cpu.GetProperty("logicalCores").GetInt32(), Is.EqualTo(Environment.ProcessorCount));
        Assert.That(cpu.GetProperty("features").GetProperty("AVX2").GetBoolean(), Is.EqualTo(Avx2.IsSupported));
        Assert.That(cpu.GetProperty("features").GetProperty("AVX-512F").GetBoolean(), Is.EqualTo(Avx512F.IsSupported));
        Assert.That(cpu.GetProperty("model").GetString(), Is.Not.Empty);
        var probe = RealCudaDriver.Default.Probe();
        var cuda = root.GetProperty("cuda");
        Assert.That(cuda.GetProperty("status").GetString(), Is.EqualTo(probe.Status.ToString()));
        Assert.That(cuda.GetProperty("reason").GetString(), Is.EqualTo(probe.Reason));
        Assert.That(cuda.GetProperty("devices").GetArrayLength(), Is.EqualTo(probe.Devices.Count));
        var kernels = root.GetProperty("kernels");
        Assert.That(kernels.GetProperty("built").GetBoolean(), Is.EqualTo(KernelImage.Current.HasFatbin));
        if (!KernelImage.Current.HasFatbin) Assert.That(kernels.GetProperty("note").GetString(), Does.Contain("kernels not built"));
        var backends = root.GetProperty("backends").EnumerateArray().Select(b => b.GetProperty("name").GetString()).ToList();
        Assert.That(backends, Does.Contain("cpu").And.Contain("cuda"));
    }

    [Test]
    public void InfoRejectsUnknownOptions()
    {
        var error = new StringWriter();
        Assert.That(Program.Run(["info", "--bogus"], new StringWriter(), error), Is.EqualTo(2));
        Assert.That(error.ToString(), Does.Contain("--bogus"));
    }

    [Test]
    public void TextReportListsDevicesAndKernelsWithTheirArchs()
    {
        using var driver = new FakeCudaDriver();
        var report = ResourceReport.Parse("""
            {"compiler":"nvcc 12.8","archs":["sm_80","sm_90a"],"kernels":[
              {"name":"dk_quantize_act_fp8","arch":"sm_80"},{"name":"dk_quantize_act_fp8","arch":"sm_90a"},{"name":"dk_gemm_fp8","arch":"sm_90a"}]}
            """);
        var image = new KernelImage([1], "embedded", report, null, null);
        var system = SystemReport.Collect(driver, image);
        var text = new StringWriter();
        system.WriteText(text);
        string s = text.ToString();
        Assert.That(s, Does.Contain("Fake GPU, CC 9.0, 4 SMs, 1.0 GiB, shared memory opt-in 227 KiB"));
        Assert.That(s, Does.Contain("nvcc 12.8, archs sm_80 sm_90a"));
        Assert.That(s, Does.Match(@"dk_quantize_act_fp8\s+sm_80 sm_90a"));
        Assert.That(s, Does.Match(@"dk_gemm_fp8\s+sm_90a"));
        Assert.That(s, Does.Contain("fake (ready)"));

        using var doc = JsonDocument.Parse(system.ToJson());
        var k = doc.RootElement.GetProperty("kernels").GetProperty("kernels");
        Assert.That(k.GetArrayLength(), Is.EqualTo(2));
        Assert.That(k[0].GetProperty("name").GetString(), Is.EqualTo("dk_gemm_fp8"));
        Assert.That(doc.RootElement.GetProperty("cuda").GetProperty("devices")[0].GetProperty("computeCapability").GetString(), Is.EqualTo("9.0"));
    }

    [Test]
    public void TextReportSaysKernelsNotBuiltWithoutAFatbin()
    {
        var driver = new RealCudaDriver(["libdeepkernels-no-such-cuda.so.42"], null);
        var system = SystemReport.Collect(driver, new KernelImage([], "none", null, null, "no fatbin is embedded"));
        var text = new StringWriter();
        system.WriteText(text);
        Assert.That(text.ToString(), Does.Contain("DriverLibraryMissing").And.Contain("kernels not built: no fatbin is embedded"));
        Assert.That(system.Kernels.Built, Is.False);
    }
}
