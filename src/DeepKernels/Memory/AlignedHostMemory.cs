using System.Runtime.InteropServices;

namespace DeepKernels.Memory;

/// <summary>64-byte aligned native host memory (one cache line, one AVX-512 vector).</summary>
public sealed unsafe class AlignedHostMemory : SafeHandle
{
    /// <summary>Alignment in bytes.</summary>
    public const int Alignment = 64;

    /// <summary>Allocates <paramref name="bytes"/> bytes; throws <see cref="OutOfMemoryException"/> with the size on failure.</summary>
    public AlignedHostMemory(long bytes) : base(IntPtr.Zero, ownsHandle: true)
    {
        if (bytes < 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "Expected a size >= 0.");
        void* p;
        try
        {
            p = NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), Alignment);
        }
        catch (OutOfMemoryException)
        {
            throw new OutOfMemoryException($"Could not allocate {bytes} bytes of aligned host memory.");
        }
        SetHandle((nint)p);
        Length = bytes;
    }

    /// <summary>Size in bytes.</summary>
    public long Length { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc />
    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}
