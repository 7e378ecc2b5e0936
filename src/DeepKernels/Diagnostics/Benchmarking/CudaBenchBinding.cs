using DeepKernels.Backends;
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
        return backend is ICudaBenchSource source ? source.GetBenchTarget() : null;
    }
}

/// <summary>Implemented by backends that can be timed with CUDA events (the CUDA backend, over the real driver or the emulator).</summary>
public interface ICudaBenchSource
{
    /// <summary>The driver, stream and device to time on.</summary>
    CudaBenchTarget GetBenchTarget();
}
