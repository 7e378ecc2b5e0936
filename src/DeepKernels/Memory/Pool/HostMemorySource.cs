using System.Runtime.InteropServices;
using DeepKernels.Tensors;

namespace DeepKernels.Memory.Pool;

/// <summary>Aligned native host memory (64 bytes, like <see cref="AlignedHostMemory"/>) for the CPU backend.</summary>
public sealed unsafe class HostMemorySource : IMemorySource
{
    /// <summary>The shared instance.</summary>
    public static HostMemorySource Instance { get; } = new();

    /// <inheritdoc />
    public MemoryLocation Location => MemoryLocation.Host;

    /// <inheritdoc />
    public int Alignment => AlignedHostMemory.Alignment;

    /// <inheritdoc />
    public nint Allocate(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "Expected a size > 0.");
        try
        {
            return (nint)NativeMemory.AlignedAlloc((nuint)bytes, (nuint)Alignment);
        }
        catch (OutOfMemoryException)
        {
            throw new OutOfMemoryException($"Could not allocate {bytes} bytes of aligned host memory for the pool.");
        }
    }

    /// <inheritdoc />
    public void Free(nint address, long bytes) => NativeMemory.AlignedFree((void*)address);
}
