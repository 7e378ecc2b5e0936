using DeepKernels.Cuda;
using DeepKernels.Tensors;

namespace DeepKernels.Memory.Pool;

/// <summary>
/// Device memory from the CUDA stream-ordered allocator (cuMemAllocFromPoolAsync / cuMemFreeAsync)
/// on one stream: allocation and free are ordered with the kernels queued on that stream, so a
/// block freed after a step's last kernel can be reused by the next step without a device sync.
/// </summary>
public sealed class CudaStreamOrderedSource : IMemorySource
{
    private readonly ICudaDriver _driver;
    private readonly nint _stream;

    /// <summary>Allocates through <paramref name="driver"/>, ordered on <paramref name="stream"/> (0 = default stream).</summary>
    public CudaStreamOrderedSource(ICudaDriver driver, nint stream)
    {
        ArgumentNullException.ThrowIfNull(driver);
        _driver = driver;
        _stream = stream;
    }

    /// <inheritdoc />
    public MemoryLocation Location => MemoryLocation.Device;

    /// <summary>cudaMalloc-family allocations are at least 256-byte aligned.</summary>
    public int Alignment => 256;

    /// <inheritdoc />
    public nint Allocate(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "Expected a size > 0.");
        return checked((nint)_driver.AllocateAsync((nuint)bytes, _stream));
    }

    /// <inheritdoc />
    public void Free(nint address, long bytes) => _driver.FreeAsync((ulong)address, _stream);
}
