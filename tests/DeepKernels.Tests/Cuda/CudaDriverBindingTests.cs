using System.Runtime.InteropServices;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Interop;

namespace DeepKernels.Tests.Cuda;

public class CudaDriverBindingTests
{
    [Test]
    public void ProbeWithMissingDriverLibraryReportsItAndDoesNotThrow()
    {
        var driver = new RealCudaDriver(["libdeepkernels-no-such-cuda.so.42"], null);
        CudaProbeResult? result = null;
        Assert.DoesNotThrow(() => result = driver.Probe());
        Assert.That(result!.Status, Is.EqualTo(CudaStatus.DriverLibraryMissing));
        Assert.That(result.Reason, Does.Contain("libdeepkernels-no-such-cuda.so.42"));
        Assert.That(result.Reason, Does.Contain("missing"));
        Assert.That(result.IsReady, Is.False);
        Assert.That(result.Devices, Is.Empty);
    }

    [Test]
    public unsafe void RealProbeAgreesWithCuInit()
    {
        if (!CudaLibrary.TryLoadDefault(out string why)) Assert.Ignore(why);
        var result = RealCudaDriver.Default.Probe();
        int init = CudaNative.cuInit(0);
        if (init == CudaResult.ErrorNoDevice)
        {
            // The state of the CPU machines and CI: the toolkit's libcuda with no GPU.
            Assert.That(result.Status, Is.EqualTo(CudaStatus.NoDevice));
            Assert.That(result.Reason, Does.Contain("CUDA_ERROR_NO_DEVICE"));
            int version;
            Assert.That(CudaNative.cuDriverGetVersion(&version), Is.EqualTo(0));
            Assert.That(result.DriverVersion, Is.EqualTo(version));
        }
        else if (init == 0)
        {
            Assert.That(result.Status, Is.AnyOf(CudaStatus.Ready, CudaStatus.KernelsNotBuilt, CudaStatus.DriverTooOld, CudaStatus.NoDevice));
            if (result.Status is CudaStatus.Ready or CudaStatus.KernelsNotBuilt) Assert.That(result.Devices, Is.Not.Empty);
        }
        else
        {
            Assert.That(result.Status, Is.Not.EqualTo(CudaStatus.Ready));
        }
    }

    [Test]
    public void EveryDriverEntryPointIsExportedByTheInstalledDriver()
    {
        // The emulator never resolves these names, so a misspelt entry point (or a plain name
        // where cuda.h maps it to _v2) would only show on a GPU host. Any real libcuda (the
        // toolkit installs one here) exports every name, GPU or not.
        if (!CudaLibrary.TryLoadDefault(out string why)) Assert.Ignore(why);
        nint handle = 0;
        foreach (string name in CudaLibrary.DefaultCandidates)
            if (NativeLibrary.TryLoad(name, out handle)) break;
        Assert.That(handle, Is.Not.EqualTo((nint)0));
        try
        {
            var imports = typeof(CudaNative).GetMethods(System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic)
                .Select(m => (Method: m, Import: m.GetCustomAttributes(typeof(LibraryImportAttribute), false).OfType<LibraryImportAttribute>().SingleOrDefault()))
                .Where(x => x.Import is not null)
                .Select(x => x.Import!.EntryPoint ?? x.Method.Name)
                .ToList();
            Assert.That(imports, Has.Count.GreaterThanOrEqualTo(40), "the binding's LibraryImports");
            Assert.That(imports, Does.Contain("cuMemAlloc_v2").And.Contain("cuLaunchKernelEx").And.Contain("cuTensorMapEncodeTiled"));
            int driverVersion = DriverVersion();
            // cuTensorMapEncodeTiled exists from CUDA 12.0 drivers on; older ones get NotSupportedException.
            var missing = imports.Where(n => !NativeLibrary.TryGetExport(handle, n, out _))
                .Where(n => !(n == "cuTensorMapEncodeTiled" && driverVersion < 12000)).ToList();
            Assert.That(missing, Is.Empty, $"entry points the installed driver ({driverVersion}) does not export");
        }
        finally
        {
            NativeLibrary.Free(handle);
        }
    }

    private static unsafe int DriverVersion()
    {
        int version;
        Assert.That(CudaNative.cuDriverGetVersion(&version), Is.EqualTo(0), "cuDriverGetVersion");
        return version;
    }

    [Test]
    public void CudaExceptionFromRealCuResultCarriesCallNameAndString()
    {
        if (!CudaLibrary.TryLoadDefault(out string why)) Assert.Ignore(why);
        var (name, text) = CudaResult.DescribeWithDriver(CudaResult.ErrorOutOfMemory);
        Assert.That(name, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"), "cuGetErrorName through libcuda");
        Assert.That(text, Is.Not.Null.And.Not.Empty, "cuGetErrorString through libcuda");

        var e = CudaResult.Exception("cuMemAlloc_v2", CudaResult.ErrorOutOfMemory);
        Assert.That(e.Call, Is.EqualTo("cuMemAlloc_v2"));
        Assert.That(e.Code, Is.EqualTo(2));
        Assert.That(e.ErrorName, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
        Assert.That(e.ErrorString, Is.EqualTo(text));
        Assert.That(e.Message, Does.Contain("cuMemAlloc_v2").And.Contain("CUDA_ERROR_OUT_OF_MEMORY").And.Contain(text!).And.Contain("(2)"));
    }

    [Test]
    public void CheckThrowsOnlyForNonZeroResults()
    {
        Assert.DoesNotThrow(() => CudaResult.Check(0, "cuInit"));
        var e = Assert.Throws<CudaException>(() => CudaResult.Check(100, "cuInit"));
        Assert.That(e!.ErrorName, Is.EqualTo("CUDA_ERROR_NO_DEVICE"));
        Assert.That(e.Call, Is.EqualTo("cuInit"));
    }

    [Test]
    public void UnknownCuResultGetsAGenericNameInsteadOfFailing()
    {
        var (name, text) = CudaResult.Describe(123456);
        Assert.That(name, Is.EqualTo("CUDA_ERROR_123456"));
        Assert.That(text, Is.Not.Empty);
    }

    [Test]
    public void FallbackTableNamesCommonResults()
    {
        Assert.That(CudaResult.DescribeFromTable(2)!.Value.Name, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
        Assert.That(CudaResult.DescribeFromTable(100)!.Value.Name, Is.EqualTo("CUDA_ERROR_NO_DEVICE"));
        Assert.That(CudaResult.DescribeFromTable(209)!.Value.Name, Is.EqualTo("CUDA_ERROR_NO_BINARY_FOR_GPU"));
        Assert.That(CudaResult.DescribeFromTable(424242), Is.Null);
    }

    [Test]
    public void LaunchStructsMatchCudaHLayout()
    {
        // cuda.h (11.8+): CUlaunchConfig is 7 uints, CUstream at 32, attrs at 40, numAttrs at 48.
        Assert.That(Marshal.SizeOf<CudaLaunchConfig>(), Is.EqualTo(56));
        Assert.That(Marshal.OffsetOf<CudaLaunchConfig>(nameof(CudaLaunchConfig.Stream)).ToInt32(), Is.EqualTo(32));
        Assert.That(Marshal.OffsetOf<CudaLaunchConfig>(nameof(CudaLaunchConfig.Attributes)).ToInt32(), Is.EqualTo(40));
        Assert.That(Marshal.OffsetOf<CudaLaunchConfig>(nameof(CudaLaunchConfig.AttributeCount)).ToInt32(), Is.EqualTo(48));
        // CUlaunchAttribute: 4-byte id padded to 8, then a 64-byte union.
        Assert.That(Marshal.SizeOf<CudaLaunchAttribute>(), Is.EqualTo(72));
    }

    [TestCase(12040, "12.4")]
    [TestCase(11080, "11.8")]
    [TestCase(13000, "13.0")]
    [TestCase(0, "(unknown version)")]
    public void DriverVersionFormatting(int version, string expected) =>
        Assert.That(RealCudaDriver.FormatVersion(version), Is.EqualTo(expected));
}
