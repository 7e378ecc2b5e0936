using DeepKernels.Tensors;

namespace DeepKernels.Memory.Pool;

/// <summary>
/// Where a <see cref="MemoryPool"/> gets its blocks: aligned native host memory for the CPU
/// backend, or a CUDA stream-ordered pool for a CUDA backend. Addresses are returned as
/// <see cref="nint"/> (device pointers fit, as on every 64-bit platform CUDA supports).
/// </summary>
public interface IMemorySource
{
    /// <summary>Where the memory lives.</summary>
    MemoryLocation Location { get; }

    /// <summary>Alignment in bytes every returned address has.</summary>
    int Alignment { get; }

    /// <summary>Allocates <paramref name="bytes"/> (&gt; 0) bytes.</summary>
    nint Allocate(long bytes);

    /// <summary>Frees a block returned by <see cref="Allocate"/>.</summary>
    void Free(nint address, long bytes);
}
