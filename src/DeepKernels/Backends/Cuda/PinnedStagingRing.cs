using DeepKernels.Cuda;
using DeepKernels.Cuda.Handles;

namespace DeepKernels.Backends.Cuda;

/// <summary>
/// Page-locked staging for small host-to-device copies. The caller's bytes are copied into a
/// slot of a pinned ring at once (so the caller may reuse or free its span immediately), the
/// device copy is issued asynchronously from that slot on the stream, and an event recorded
/// right after it guards the slot. A slot's bytes are overwritten only once its event has
/// completed, so the host waits only when the ring wraps onto a copy still in flight, never for
/// the kernels queued before the copy. The pinned buffer is allocated on first use and never
/// grows; events are created on demand (at most <see cref="MaxInFlight"/>) and reused.
/// Not thread-safe: <see cref="CudaBackend"/> serialises calls under a lock, with its context current.
/// </summary>
internal sealed class PinnedStagingRing : IDisposable
{
    /// <summary>Ring size the backend uses.</summary>
    public const int DefaultCapacity = 4 << 20;

    /// <summary>Copies guarded at once; past it the oldest is waited for (it is long done in practice).</summary>
    public const int MaxInFlight = 128;

    // Slot starts are aligned so DMA reads whole 16-byte lines.
    private const int Alignment = 16;

    private readonly CudaPrimaryContextHandle _context;
    private readonly nint _stream;
    private readonly Queue<Pending> _inFlight = new();
    private readonly Stack<CudaEventHandle> _idleEvents = new();
    private readonly List<CudaEventHandle> _allEvents = [];
    private CudaPinnedHostMemory? _buffer;
    private long _head;
    private bool _disposed;

    public PinnedStagingRing(CudaPrimaryContextHandle context, nint stream, int capacity = DefaultCapacity)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (capacity < 4 * Alignment || capacity % Alignment != 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"Expected a multiple of {Alignment} of at least {4 * Alignment} bytes.");
        _context = context;
        _stream = stream;
        Capacity = capacity;
    }

    /// <summary>Size of the pinned buffer in bytes.</summary>
    public int Capacity { get; }

    /// <summary>Largest copy that is staged; larger ones take the backend's synchronous path.</summary>
    public int MaxStagedBytes => Capacity / 4;

    /// <summary>Whether the pinned buffer has been allocated.</summary>
    public bool IsAllocated => _buffer is not null;

    /// <summary>Copies staged so far.</summary>
    public long StagedCopies { get; private set; }

    /// <summary>Times a slot was reused before its copy was known to be complete (an event wait).</summary>
    public long EventWaits { get; private set; }

    /// <summary>Copies whose slots are still guarded by an event.</summary>
    public int InFlight => _inFlight.Count;

    private ICudaDriver Driver => _context.Driver;

    /// <summary>Whether a copy of <paramref name="bytes"/> is staged.</summary>
    public bool CanStage(long bytes) => bytes > 0 && bytes <= MaxStagedBytes;

    /// <summary>
    /// Copies <paramref name="source"/> into a free slot and queues its copy to
    /// <paramref name="destination"/> on the stream; returns without waiting for the device.
    /// </summary>
    public unsafe void CopyToDevice(ReadOnlySpan<byte> source, ulong destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!CanStage(source.Length))
            throw new ArgumentOutOfRangeException(nameof(source), source.Length, $"Expected 1..{MaxStagedBytes} bytes to stage.");
        _buffer ??= new CudaPinnedHostMemory(_context, Capacity);
        int bytes = source.Length;
        long start = (_head + Alignment - 1) & ~(long)(Alignment - 1);
        if (start + bytes > Capacity) start = 0;
        Reclaim(start, start + bytes);
        if (_inFlight.Count >= MaxInFlight) WaitThrough(0);
        // Take the event before the copy is queued, so that no copy is ever left unguarded.
        var evt = _idleEvents.Count > 0 ? _idleEvents.Pop() : NewEvent();
        try
        {
            nint slot = _buffer.DangerousGetHandle() + (nint)start;
            source.CopyTo(new Span<byte>((void*)slot, bytes));
            Driver.CopyHostToDevice(destination, slot, (nuint)bytes, _stream);
            Driver.RecordEvent(evt.DangerousGetHandle(), _stream);
        }
        catch
        {
            _idleEvents.Push(evt);
            throw;
        }
        StagedCopies++;
        _inFlight.Enqueue(new Pending(start, start + bytes, StagedCopies, evt));
        _head = start + bytes;
    }

    /// <summary>
    /// Called after the stream has been synchronised: the first <paramref name="stagedBefore"/>
    /// copies (<see cref="StagedCopies"/> read before the synchronisation) are complete, and their
    /// slots are free without an event wait. Copies staged meanwhile by another thread stay guarded.
    /// </summary>
    public void MarkCompleteThrough(long stagedBefore)
    {
        while (_inFlight.TryPeek(out var oldest) && oldest.Sequence <= stagedBefore)
            _idleEvents.Push(_inFlight.Dequeue().Event);
    }

    /// <summary>Waits for the newest in-flight copy whose slot overlaps [lo, hi), and retires it and all older ones.</summary>
    private void Reclaim(long lo, long hi)
    {
        int index = 0, newest = -1;
        foreach (var p in _inFlight)
        {
            if (p.Start < hi && lo < p.End) newest = index;
            index++;
        }
        if (newest >= 0) WaitThrough(newest);
    }

    // Copies on one stream complete in order: once the copy at queue position `index` is done, so are the older ones.
    private void WaitThrough(int index)
    {
        var target = _inFlight.ElementAt(index);
        Driver.SynchronizeEvent(target.Event.DangerousGetHandle());
        EventWaits++;
        for (int i = 0; i <= index; i++) _idleEvents.Push(_inFlight.Dequeue().Event);
    }

    private CudaEventHandle NewEvent()
    {
        var evt = new CudaEventHandle(_context);
        _allEvents.Add(evt);
        return evt;
    }

    /// <summary>Frees the pinned buffer and the events; the owner has synchronised the stream first.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _inFlight.Clear();
        _idleEvents.Clear();
        foreach (var evt in _allEvents) evt.Dispose();
        _allEvents.Clear();
        _buffer?.Dispose();
        _buffer = null;
    }

    private readonly record struct Pending(long Start, long End, long Sequence, CudaEventHandle Event);
}
