using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Handles;
using DeepKernels.Cuda.Interop;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

/// <summary>
/// The CUDA backend, over any <see cref="ICudaDriver"/>: the real driver or the kernel emulator.
/// It owns the device's primary context, one non-blocking stream on which all its work is
/// ordered, and the kernel module loaded once from the fatbin. Device memory comes from the
/// stream-ordered pool where the driver supports it, else from cuMemAlloc. Each op it
/// implements lives in its own file (CudaBackend.&lt;Op&gt;.cs) and launches through
/// <see cref="LaunchKernel(string, Dim3, Dim3, uint, ReadOnlySpan{KernelArg})"/>, which checks
/// arguments against the build's signature table before any native call.
/// Uploads of up to 1 MiB (a quarter of the 4 MiB staging ring) are staged through
/// a pinned ring and never wait for queued work; larger uploads and all downloads synchronise the
/// stream. Copies may come from several threads (the staging ring is locked); work stays ordered
/// on the one stream.
/// </summary>
public sealed partial class CudaBackend : Backend
{
    /// <summary>Dynamic shared memory a kernel may use without opting in.</summary>
    public const int DefaultDynamicSharedLimit = 48 * 1024;

    /// <summary>Threads per block the hardware allows.</summary>
    public const int MaxThreadsPerBlock = 1024;

    private readonly CudaPrimaryContextHandle _context;
    private readonly CudaStreamHandle _stream;
    private readonly CudaModuleHandle _module;
    private readonly KernelImage _image;
    private readonly ConcurrentDictionary<string, KernelFunction> _functions = new(StringComparer.Ordinal);
    private volatile bool _poolSupported = true;
    // Small uploads go through a pinned ring so that they never wait for queued kernels.
    private readonly Lock _stagingGate = new();
    private PinnedStagingRing _staging;

    private CudaBackend(ICudaDriver driver, int ordinal, KernelImage image)
    {
        Driver = driver;
        _image = image;
        Device = driver.GetDeviceInfo(ordinal);
        _context = new CudaPrimaryContextHandle(driver, ordinal);
        try
        {
            _stream = new CudaStreamHandle(_context);
            _module = new CudaModuleHandle(_context, image.Fatbin.Span);
            _staging = new PinnedStagingRing(_context, _stream.DangerousGetHandle());
        }
        catch
        {
            _stream?.Dispose();
            _context.Dispose();
            throw;
        }
    }

    /// <summary>The driver this backend runs on.</summary>
    public ICudaDriver Driver { get; }

    /// <summary>The device.</summary>
    public CudaDeviceInfo Device { get; }

    /// <summary>The kernels this backend loaded (fatbin, resource report, signature table).</summary>
    public KernelImage Kernels => _image;

    /// <summary>Whether device memory comes from the stream-ordered pool.</summary>
    public bool UsesMemoryPool => _poolSupported;

    /// <inheritdoc />
    public override string Name => Driver.Name;

    /// <inheritdoc />
    public override MemoryLocation MemoryLocation => MemoryLocation.Device;

    /// <summary>The stream all of this backend's work is ordered on.</summary>
    internal nint Stream => _stream.DangerousGetHandle();

    /// <summary>
    /// Creates a backend on device <paramref name="ordinal"/> when the driver's probe says it is
    /// ready; otherwise returns false with the probe's reason. Never throws for an unusable driver.
    /// </summary>
    public static bool TryCreate(ICudaDriver driver, int ordinal, out CudaBackend? backend, out string reason) =>
        TryCreate(driver, ordinal, KernelImage.Current, out backend, out reason);

    /// <summary>Creates a backend, or throws <see cref="InvalidOperationException"/> with the probe's reason.</summary>
    public static CudaBackend Create(ICudaDriver? driver = null, int ordinal = 0) =>
        TryCreate(driver ?? RealCudaDriver.Default, ordinal, out var backend, out string reason)
            ? backend!
            : throw new InvalidOperationException($"CUDA backend unavailable: {reason}");

    internal static bool TryCreate(ICudaDriver driver, int ordinal, KernelImage image, out CudaBackend? backend, out string reason)
    {
        ArgumentNullException.ThrowIfNull(driver);
        ArgumentNullException.ThrowIfNull(image);
        backend = null;
        var probe = driver.Probe();
        if (!probe.IsReady)
        {
            reason = probe.Reason;
            return false;
        }
        try
        {
            int count = driver.DeviceCount;
            if (ordinal < 0 || ordinal >= count)
            {
                reason = $"Device ordinal {ordinal} is out of range: the driver reports {count} device(s).";
                return false;
            }
            backend = new CudaBackend(driver, ordinal, image);
            reason = probe.Reason;
            return true;
        }
        catch (CudaException e)
        {
            reason = e.Message;
            return false;
        }
    }

    /// <inheritdoc />
    public override void Synchronize()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var staged = StagedSoFar();
        _context.MakeCurrent();
        Driver.SynchronizeStream(Stream);
        StagedCopiesComplete(staged);
    }

    /// <summary>The pinned staging ring small uploads go through (tests read its counters).</summary>
    internal PinnedStagingRing Staging => _staging;

    /// <summary>Replaces the staging ring with one of <paramref name="capacity"/> bytes (tests exercise wrap-around with a small one).</summary>
    internal void ResizeStaging(int capacity)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var ring = new PinnedStagingRing(_context, Stream, capacity);
        lock (_stagingGate)
        {
            _context.MakeCurrent();
            Driver.SynchronizeStream(Stream);
            _staging.Dispose();
            _staging = ring;
        }
    }

    /// <summary>Allocates page-locked host memory for fast copies.</summary>
    public CudaPinnedHostMemory AllocatePinned(long bytes)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return new CudaPinnedHostMemory(_context, bytes);
    }

    /// <summary>Creates an event for timing work on this backend's stream.</summary>
    public CudaEventHandle CreateEvent()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return new CudaEventHandle(_context);
    }

    /// <summary>Records <paramref name="evt"/> on this backend's stream.</summary>
    public void Record(CudaEventHandle evt)
    {
        ArgumentNullException.ThrowIfNull(evt);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        _context.MakeCurrent();
        Driver.RecordEvent(evt.DangerousGetHandle(), Stream);
    }

    /// <summary>Waits for <paramref name="end"/> and returns the milliseconds since <paramref name="start"/>.</summary>
    public float ElapsedMilliseconds(CudaEventHandle start, CudaEventHandle end)
    {
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(end);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        _context.MakeCurrent();
        Driver.SynchronizeEvent(end.DangerousGetHandle());
        return Driver.ElapsedMilliseconds(start.DangerousGetHandle(), end.DangerousGetHandle());
    }

    /// <summary>Copies a contiguous device tensor into another of the same byte size, ordered on the stream.</summary>
    public void CopyDeviceToDevice(TensorView source, TensorView destination)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        Guard.Contiguous(source, nameof(source));
        Guard.Contiguous(destination, nameof(destination));
        Guard.OnBackend(source, this, nameof(source));
        Guard.OnBackend(destination, this, nameof(destination));
        if (source.ByteCount != destination.ByteCount)
            throw new ArgumentException($"Expected {nameof(destination)} of {source.ByteCount} bytes to match {source}, got {destination}.", nameof(destination));
        _context.MakeCurrent();
        Driver.CopyDeviceToDevice((ulong)destination.Data, (ulong)source.Data, (nuint)source.ByteCount, Stream);
    }

    /// <inheritdoc />
    protected override SafeHandle AllocateBytes(long bytes)
    {
        if (_poolSupported)
        {
            try
            {
                return new CudaDeviceMemory(_context, bytes, _stream);
            }
            catch (Exception e) when (e is EntryPointNotFoundException or NotSupportedException or NotImplementedException
                                      || e is CudaException { Code: CudaResult.ErrorNotSupported })
            {
                // No stream-ordered pool on this device or driver: plain allocations from now on.
                _poolSupported = false;
            }
        }
        return new CudaDeviceMemory(_context, bytes);
    }

    /// <inheritdoc />
    protected override unsafe void CopyFromHostCore(ReadOnlySpan<byte> source, nint destination)
    {
        if (source.IsEmpty) return;
        lock (_stagingGate)
        {
            _context.MakeCurrent();
            if (_staging.CanStage(source.Length))
            {
                // Copied into pinned memory now and to the device in stream order: no wait for queued work.
                _staging.CopyToDevice(source, (ulong)destination);
                return;
            }
        }
        var staged = StagedSoFar();
        _context.MakeCurrent();
        fixed (byte* p = source)
        {
            Driver.CopyHostToDevice((ulong)destination, (nint)p, (nuint)source.Length, Stream);
            // Too large to stage: the span may be pageable or stack memory, so it must stay put until the copy is done.
            Driver.SynchronizeStream(Stream);
        }
        StagedCopiesComplete(staged);
    }

    private (PinnedStagingRing Ring, long Count) StagedSoFar()
    {
        lock (_stagingGate) return (_staging, _staging.StagedCopies);
    }

    // After a stream synchronisation the copies staged before it are done: free their slots without event waits.
    private void StagedCopiesComplete((PinnedStagingRing Ring, long Count) before)
    {
        lock (_stagingGate) before.Ring.MarkCompleteThrough(before.Count);
    }

    /// <inheritdoc />
    protected override unsafe void CopyToHostCore(nint source, Span<byte> destination)
    {
        if (destination.IsEmpty) return;
        var staged = StagedSoFar();
        _context.MakeCurrent();
        fixed (byte* p = destination)
        {
            Driver.CopyDeviceToHost((nint)p, (ulong)source, (nuint)destination.Length, Stream);
            Driver.SynchronizeStream(Stream);
        }
        StagedCopiesComplete(staged);
    }

    /// <inheritdoc />
    protected override void ZeroCore(nint destination, long bytes)
    {
        if (bytes == 0) return;
        _context.MakeCurrent();
        Driver.Memset((ulong)destination, 0, (nuint)bytes, Stream);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        try
        {
            _context.MakeCurrent();
            Driver.SynchronizeStream(Stream);
        }
        catch (CudaException)
        {
            // A failed kernel leaves the context unusable; release what we can.
        }
        _functions.Clear();
        lock (_stagingGate) _staging.Dispose();
        // Buffers still alive keep the stream and context referenced until they are freed.
        _module.Dispose();
        _stream.Dispose();
        _context.Dispose();
    }
}
