using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;

namespace DeepKernels.Tests.Cuda;

/// <summary>
/// The CUDA backend that [Category("Cuda")] tests run on, chosen by <c>DEEPKERNELS_TEST_CUDA</c>:
/// <c>cuda</c> = the real device (tests fail when it is unusable), <c>cuda-emu</c> = the kernel
/// emulator (fails when not built), unset = the real device when the probe is ready, else the
/// emulator when built, else the tests are ignored with the probe's reason. One backend is
/// shared by all tests of the run and lives until the process exits.
/// </summary>
internal static class CudaTestBackends
{
    public const string EnvironmentVariable = "DEEPKERNELS_TEST_CUDA";

    private static readonly Lazy<(CudaBackend? Backend, string Reason, bool Required)> Shared = new(Create);

    /// <summary>The backend, or <see cref="Assert.Ignore(string)"/> / <see cref="Assert.Fail(string)"/> with the reason.</summary>
    public static CudaBackend Get()
    {
        var (backend, reason, required) = Shared.Value;
        if (backend is not null) return backend;
        if (required) Assert.Fail(reason);
        else Assert.Ignore(reason);
        throw new InvalidOperationException("unreachable");
    }

    private static (CudaBackend?, string, bool) Create()
    {
        string? choice = Environment.GetEnvironmentVariable(EnvironmentVariable)?.Trim().ToLowerInvariant();
        switch (choice)
        {
            case "cuda":
                return CudaBackend.TryCreate(RealCudaDriver.Default, 0, out var real, out string why)
                    ? (real, why, true)
                    : (null, $"{EnvironmentVariable}=cuda but the CUDA backend is unavailable: {why}", true);
            case "cuda-emu":
                return TryEmulator(out var forced, out string emuWhy)
                    ? (forced, emuWhy, true)
                    : (null, $"{EnvironmentVariable}=cuda-emu but the kernel emulator is unavailable: {emuWhy}", true);
            case null or "":
                if (CudaBackend.TryCreate(RealCudaDriver.Default, 0, out var device, out string reason))
                    return (device, reason, false);
                if (TryEmulator(out var emulated, out string emuReason))
                    return (emulated, emuReason, false);
                return (null, $"No CUDA device for [Category(\"Cuda\")] tests ({reason}) and no kernel emulator ({emuReason}).", false);
            default:
                return (null, $"{EnvironmentVariable}='{choice}' is not one of: cuda, cuda-emu (or unset).", true);
        }
    }

    private static bool TryEmulator(out CudaBackend? backend, out string reason)
    {
        backend = null;
        if (!EmulatorDriver.TryLoad(out var driver, out reason)) return false;
        return CudaBackend.TryCreate(driver!, 0, out backend, out reason);
    }
}
