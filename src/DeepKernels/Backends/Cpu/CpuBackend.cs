using System.Runtime.InteropServices;
using DeepKernels.Memory;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

/// <summary>
/// The CPU backend: SIMD and multithreaded, the numerical reference for the CUDA backend.
/// Each op it implements lives in its own file (CpuBackend.&lt;Op&gt;.cs).
/// </summary>
public sealed partial class CpuBackend : Backend
{
    /// <summary>Creates a CPU backend using up to <paramref name="maxThreads"/> threads (default: all cores).</summary>
    public CpuBackend(int maxThreads = 0)
    {
        if (maxThreads < 0) throw new ArgumentOutOfRangeException(nameof(maxThreads), maxThreads, "Expected 0 (all cores) or a positive thread count.");
        MaxThreads = maxThreads == 0 ? Environment.ProcessorCount : maxThreads;
        ParallelOptions = new ParallelOptions { MaxDegreeOfParallelism = MaxThreads };
    }

    /// <summary>The shared instance using every core.</summary>
    public static CpuBackend Default { get; } = new();

    /// <summary>Threads used by parallel loops.</summary>
    public int MaxThreads { get; }

    internal ParallelOptions ParallelOptions { get; }

    /// <inheritdoc />
    public override string Name => "cpu";

    /// <inheritdoc />
    public override MemoryLocation MemoryLocation => MemoryLocation.Host;

    /// <inheritdoc />
    protected override SafeHandle AllocateBytes(long bytes) => new AlignedHostMemory(bytes);

    /// <inheritdoc />
    protected override unsafe void CopyFromHostCore(ReadOnlySpan<byte> source, nint destination) =>
        source.CopyTo(new Span<byte>((void*)destination, source.Length));

    /// <inheritdoc />
    protected override unsafe void CopyToHostCore(nint source, Span<byte> destination) =>
        new ReadOnlySpan<byte>((void*)source, destination.Length).CopyTo(destination);

    /// <inheritdoc />
    protected override unsafe void ZeroCore(nint destination, long bytes) =>
        NativeMemory.Clear((void*)destination, (nuint)bytes);
}
