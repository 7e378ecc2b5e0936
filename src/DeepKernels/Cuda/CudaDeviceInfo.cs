namespace DeepKernels.Cuda;

/// <summary>What the driver reports about one device.</summary>
/// <param name="Ordinal">Device index.</param>
/// <param name="Name">Marketing name, e.g. "NVIDIA H200".</param>
/// <param name="ComputeCapabilityMajor">Compute capability, major part (9 for Hopper).</param>
/// <param name="ComputeCapabilityMinor">Compute capability, minor part.</param>
/// <param name="MultiprocessorCount">Number of SMs.</param>
/// <param name="TotalMemoryBytes">Global memory in bytes.</param>
/// <param name="MaxSharedMemoryPerBlockOptin">Dynamic shared memory a block may opt into, in bytes.</param>
/// <param name="L2CacheBytes">L2 cache size in bytes.</param>
/// <param name="ClockRateKHz">SM clock in kHz (0 when unknown).</param>
/// <param name="MemoryClockRateKHz">Memory clock in kHz (0 when unknown).</param>
/// <param name="MemoryBusWidthBits">Memory bus width in bits (0 when unknown).</param>
public sealed record CudaDeviceInfo(
    int Ordinal,
    string Name,
    int ComputeCapabilityMajor,
    int ComputeCapabilityMinor,
    int MultiprocessorCount,
    long TotalMemoryBytes,
    int MaxSharedMemoryPerBlockOptin,
    int L2CacheBytes,
    int ClockRateKHz,
    int MemoryClockRateKHz,
    int MemoryBusWidthBits)
{
    /// <summary>Compute capability as major*10 + minor (90 for sm_90).</summary>
    public int ComputeCapability => ComputeCapabilityMajor * 10 + ComputeCapabilityMinor;
}
