namespace DeepKernels.Diagnostics.Profiling;

/// <summary>What bounds the number of resident blocks.</summary>
public enum OccupancyLimiter
{
    /// <summary>Resident warps per SM.</summary>
    Warps,
    /// <summary>Resident blocks per SM.</summary>
    Blocks,
    /// <summary>The register file.</summary>
    Registers,
    /// <summary>Shared memory.</summary>
    SharedMemory,
}

/// <summary>Theoretical occupancy of a kernel's launch on one SM.</summary>
/// <param name="BlocksPerSm">Resident blocks per SM.</param>
/// <param name="WarpsPerSm">Resident warps per SM.</param>
/// <param name="Fraction">Resident warps / maximum warps, in [0, 1].</param>
/// <param name="Limiter">The tightest limit; null when unknown (a driver's answer that the arch table does not reproduce).</param>
public sealed record OccupancyResult(int BlocksPerSm, int WarpsPerSm, double Fraction, OccupancyLimiter? Limiter);

/// <summary>
/// The CUDA occupancy calculator's arithmetic: blocks per SM is the minimum of the limits from
/// warps, blocks, registers (allocated per warp, rounded up to the allocation unit) and shared
/// memory (static + dynamic + the per-block reservation, rounded up to the allocation unit).
/// </summary>
public static class Occupancy
{
    /// <summary>Computes the theoretical occupancy; throws for impossible configurations.</summary>
    public static OccupancyResult Compute(ArchLimits arch, int blockSize, int registersPerThread, long staticSharedBytes, long dynamicSharedBytes)
    {
        ArgumentNullException.ThrowIfNull(arch);
        if (blockSize <= 0 || blockSize > 1024) throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "Expected a block size in [1, 1024].");
        if (registersPerThread < 0 || registersPerThread > arch.MaxRegistersPerThread)
            throw new ArgumentOutOfRangeException(nameof(registersPerThread), registersPerThread, $"Expected registers per thread in [0, {arch.MaxRegistersPerThread}].");
        Guard.NonNegative(staticSharedBytes, nameof(staticSharedBytes));
        Guard.NonNegative(dynamicSharedBytes, nameof(dynamicSharedBytes));

        int warpsPerBlock = (blockSize + 31) / 32;
        int byWarps = arch.MaxWarpsPerSm / warpsPerBlock;
        int byBlocks = arch.MaxBlocksPerSm;
        int byRegisters = int.MaxValue;
        if (registersPerThread > 0)
        {
            int perWarp = RoundUp(registersPerThread * 32, arch.RegisterAllocationUnit);
            byRegisters = arch.RegistersPerSm / perWarp / warpsPerBlock;
        }
        long smemPerBlock = RoundUp(staticSharedBytes + dynamicSharedBytes + arch.ReservedSharedMemoryPerBlock, arch.SharedMemoryAllocationUnit);
        int bySmem = (int)Math.Min(int.MaxValue, arch.SharedMemoryPerSm / smemPerBlock);

        var limits = new (int Blocks, OccupancyLimiter Limiter)[]
        {
            (byWarps, OccupancyLimiter.Warps), (byBlocks, OccupancyLimiter.Blocks),
            (byRegisters, OccupancyLimiter.Registers), (bySmem, OccupancyLimiter.SharedMemory),
        };
        var tightest = limits.MinBy(l => l.Blocks);
        int warps = tightest.Blocks * warpsPerBlock;
        return new OccupancyResult(tightest.Blocks, warps, (double)warps / arch.MaxWarpsPerSm, tightest.Limiter);
    }

    private static int RoundUp(int value, int unit) => (value + unit - 1) / unit * unit;

    private static long RoundUp(long value, long unit) => (value + unit - 1) / unit * unit;
}
