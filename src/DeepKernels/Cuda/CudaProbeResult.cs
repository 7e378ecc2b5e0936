namespace DeepKernels.Cuda;

/// <summary>The state of CUDA on this machine, from a probe that never throws.</summary>
public enum CudaStatus
{
    /// <summary>libcuda.so.1 / libcuda.so could not be loaded.</summary>
    DriverLibraryMissing,
    /// <summary>The driver loaded but reports no device (CUDA_ERROR_NO_DEVICE).</summary>
    NoDevice,
    /// <summary>The driver is older than the kernels need.</summary>
    DriverTooOld,
    /// <summary>A device is present but the fatbin has no kernels for its compute capability (or none were built).</summary>
    KernelsNotBuilt,
    /// <summary>A device and matching kernels are present.</summary>
    Ready,
}

/// <summary>What the probe found, with a human-readable reason.</summary>
/// <param name="Status">The state.</param>
/// <param name="Reason">One line that explains the state, shown in skip messages and <c>deepkernels info</c>.</param>
/// <param name="DriverVersion">cuDriverGetVersion (e.g. 12040), 0 when unknown.</param>
/// <param name="Devices">Devices found (empty unless the driver initialised).</param>
public sealed record CudaProbeResult(CudaStatus Status, string Reason, int DriverVersion, IReadOnlyList<CudaDeviceInfo> Devices)
{
    /// <summary>Whether kernels can run.</summary>
    public bool IsReady => Status == CudaStatus.Ready;
}
