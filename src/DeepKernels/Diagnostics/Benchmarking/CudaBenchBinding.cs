using DeepKernels.Backends;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>What CUDA event timing needs from a CUDA backend: its driver, the stream ops are queued on, and the device.</summary>
/// <param name="Driver">The driver (real or emulator) the backend uses.</param>
/// <param name="Stream">The stream the backend launches on.</param>
/// <param name="Device">The device's properties (name for the peak table, L2 size for the flush).</param>
public sealed record CudaBenchTarget(ICudaDriver Driver, nint Stream, CudaDeviceInfo Device);

/// <summary>
/// The one place that knows how to reach a CUDA backend's driver and stream, so the harness and
/// the CLI stay independent of the backend's internals.
/// </summary>
public static class CudaBenchBinding
{
    /// <summary>The timing target of a CUDA backend (real driver or emulator), or null for any other backend.</summary>
    public static CudaBenchTarget? TryGetTarget(Backend backend)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return backend is CudaBackend cuda ? new CudaBenchTarget(cuda.Driver, cuda.Stream, cuda.Device) : null;
    }
}
