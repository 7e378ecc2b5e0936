namespace DeepKernels.Cuda.Handles;

/// <summary>Device memory from cuMemAlloc, or from the stream-ordered pool (freed on its stream).</summary>
public sealed class CudaDeviceMemory : CudaChildHandle
{
    private readonly CudaStreamHandle? _stream;

    /// <summary>
    /// Allocates <paramref name="bytes"/> bytes: from the stream-ordered pool on
    /// <paramref name="stream"/> when one is given, else with cuMemAlloc.
    /// </summary>
    public CudaDeviceMemory(CudaPrimaryContextHandle context, long bytes, CudaStreamHandle? stream = null) : base(context, stream)
    {
        _stream = stream;
        Length = bytes;
        Create(driver =>
        {
            ArgumentOutOfRangeException.ThrowIfNegative(bytes);
            nuint size = (nuint)Math.Max(bytes, 1);
            return (nint)(stream is null ? driver.Allocate(size) : driver.AllocateAsync(size, stream.DangerousGetHandle()));
        });
    }

    /// <summary>Size in bytes.</summary>
    public long Length { get; }

    /// <summary>Whether the memory came from the stream-ordered pool.</summary>
    public bool IsPooled => _stream is not null;

    /// <summary>The device address.</summary>
    public ulong Address => (ulong)DangerousGetHandle();

    /// <inheritdoc />
    protected override void Free(nint value)
    {
        if (_stream is null) Driver.Free((ulong)value);
        else Driver.FreeAsync((ulong)value, _stream.DangerousGetHandle());
    }
}

/// <summary>Page-locked host memory (cuMemAllocHost), for fast asynchronous copies.</summary>
public sealed class CudaPinnedHostMemory : CudaChildHandle
{
    /// <summary>Allocates <paramref name="bytes"/> bytes of pinned host memory.</summary>
    public CudaPinnedHostMemory(CudaPrimaryContextHandle context, long bytes) : base(context)
    {
        Length = bytes;
        Create(driver =>
        {
            ArgumentOutOfRangeException.ThrowIfNegative(bytes);
            return driver.AllocateHost((nuint)Math.Max(bytes, 1));
        });
    }

    /// <summary>Size in bytes.</summary>
    public long Length { get; }

    /// <summary>The memory as a span (valid until disposed).</summary>
    public unsafe Span<byte> AsSpan()
    {
        ObjectDisposedException.ThrowIf(IsClosed, this);
        return new Span<byte>((void*)handle, checked((int)Length));
    }

    /// <inheritdoc />
    protected override void Free(nint value) => Driver.FreeHost(value);
}

/// <summary>A loaded module (cuModuleLoadData).</summary>
public sealed class CudaModuleHandle : CudaChildHandle
{
    /// <summary>Loads a fatbin, cubin or PTX image.</summary>
    public CudaModuleHandle(CudaPrimaryContextHandle context, ReadOnlySpan<byte> image) : base(context)
    {
        try
        {
            context.MakeCurrent();
            Initialize(Driver.LoadModule(image));
        }
        catch
        {
            AbandonParents();
            throw;
        }
    }

    /// <inheritdoc />
    protected override void Free(nint value) => Driver.UnloadModule(value);
}

/// <summary>A non-blocking stream.</summary>
public sealed class CudaStreamHandle : CudaChildHandle
{
    /// <summary>Creates a stream.</summary>
    public CudaStreamHandle(CudaPrimaryContextHandle context) : base(context)
    {
        Create(driver => driver.CreateStream());
    }

    /// <inheritdoc />
    protected override void Free(nint value) => Driver.DestroyStream(value);
}

/// <summary>An event that records timestamps.</summary>
public sealed class CudaEventHandle : CudaChildHandle
{
    /// <summary>Creates an event.</summary>
    public CudaEventHandle(CudaPrimaryContextHandle context) : base(context)
    {
        Create(driver => driver.CreateEvent());
    }

    /// <inheritdoc />
    protected override void Free(nint value) => Driver.DestroyEvent(value);
}
