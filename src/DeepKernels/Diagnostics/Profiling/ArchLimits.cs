namespace DeepKernels.Diagnostics.Profiling;

/// <summary>
/// Per-SM limits of one GPU architecture that bound occupancy (CUDA C Programming Guide,
/// "Compute Capabilities" table, and the CUDA occupancy calculator's allocation rules).
/// </summary>
/// <param name="Arch">The arch name as in the fatbin, e.g. "sm_90a".</param>
/// <param name="RegistersPerSm">32-bit registers per SM.</param>
/// <param name="MaxThreadsPerSm">Resident threads per SM.</param>
/// <param name="MaxBlocksPerSm">Resident thread blocks per SM.</param>
/// <param name="SharedMemoryPerSm">Shared memory per SM usable by blocks, in bytes.</param>
/// <param name="MaxRegistersPerThread">Registers one thread may use.</param>
/// <param name="RegisterAllocationUnit">Registers are allocated per warp in units of this many.</param>
/// <param name="SharedMemoryAllocationUnit">Shared memory is allocated per block in units of this many bytes.</param>
/// <param name="ReservedSharedMemoryPerBlock">Shared memory the system reserves per block (1 KiB since sm_80).</param>
public sealed record ArchLimits(
    string Arch,
    int RegistersPerSm,
    int MaxThreadsPerSm,
    int MaxBlocksPerSm,
    int SharedMemoryPerSm,
    int MaxRegistersPerThread = 255,
    int RegisterAllocationUnit = 256,
    int SharedMemoryAllocationUnit = 128,
    int ReservedSharedMemoryPerBlock = 1024)
{
    /// <summary>Resident warps per SM.</summary>
    public int MaxWarpsPerSm => MaxThreadsPerSm / 32;

    /// <summary>The archs DeepKernels builds for (or may), by name.</summary>
    public static IReadOnlyList<ArchLimits> Known { get; } =
    [
        new("sm_80", 65536, 2048, 32, 164 * 1024),
        new("sm_86", 65536, 1536, 16, 100 * 1024),
        new("sm_87", 65536, 2048, 32, 164 * 1024),
        new("sm_89", 65536, 1536, 24, 100 * 1024),
        new("sm_90", 65536, 2048, 32, 228 * 1024),
        new("sm_90a", 65536, 2048, 32, 228 * 1024),
    ];

    /// <summary>The limits for an arch name ("sm_90a", case-insensitive), or null.</summary>
    public static ArchLimits? Find(string arch) =>
        Known.FirstOrDefault(a => string.Equals(a.Arch, arch, StringComparison.OrdinalIgnoreCase));
}
