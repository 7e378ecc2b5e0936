using DeepKernels.Tensors;

namespace DeepKernels.Memory.Pool;

/// <summary>
/// Per-step scratch memory: a bump allocator over one block rented from a <see cref="MemoryPool"/>.
/// Call <see cref="Reset"/> at the start of every step; everything taken during the previous step
/// becomes invalid. When a step needs more than the current block, overflow blocks are rented
/// for the rest of that step, and the next <see cref="Reset"/> replaces all of them with one block
/// as large as the whole step needed, so from the second step of a steady workload on, no
/// allocation happens at all. Not thread-safe: one arena per stream or thread.
/// </summary>
public sealed class WorkspaceArena : IDisposable
{
    private readonly MemoryPool _pool;
    private readonly List<(nint Address, long Size)> _overflow = [];
    private nint _block;
    private long _blockSize, _offset, _stepBytes, _peakStepBytes;
    private long _resets;
    private bool _disposed;

    /// <summary>An arena over <paramref name="pool"/>, optionally pre-sized to <paramref name="initialBytes"/>.</summary>
    public WorkspaceArena(MemoryPool pool, long initialBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(pool);
        if (initialBytes < 0) throw new ArgumentOutOfRangeException(nameof(initialBytes), initialBytes, "Expected a size >= 0.");
        _pool = pool;
        if (initialBytes > 0) Grow(initialBytes);
    }

    /// <summary>Alignment of every allocation (the pool's alignment, at least 64 bytes).</summary>
    public int Alignment => Math.Max(64, _pool.Alignment);

    /// <summary>Where the arena's memory lives.</summary>
    public MemoryLocation Location => _pool.Location;

    /// <summary>Bytes of the main block.</summary>
    public long CapacityBytes => _blockSize;

    /// <summary>Bytes taken since the last <see cref="Reset"/> (including alignment padding).</summary>
    public long BytesInUse => _stepBytes;

    /// <summary>The most bytes any single step has taken.</summary>
    public long PeakStepBytes => _peakStepBytes;

    /// <summary>How many times <see cref="Reset"/> has run.</summary>
    public long ResetCount => _resets;

    /// <summary>The underlying pool's statistics.</summary>
    public PoolStatistics PoolStatistics => _pool.Statistics;

    /// <summary>Starts a new step: all memory handed out before becomes invalid and is reused.</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _resets++;
        if (_overflow.Count > 0)
        {
            long needed = _stepBytes;
            foreach (var (address, _) in _overflow) _pool.Return(address);
            _overflow.Clear();
            Grow(needed);
        }
        _offset = 0;
        _stepBytes = 0;
    }

    /// <summary>Takes <paramref name="bytes"/> bytes (aligned) for the rest of this step.</summary>
    public nint Take(long bytes)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (bytes < 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "Expected a size >= 0.");
        long size = (Math.Max(bytes, 1) + Alignment - 1) / Alignment * Alignment;
        _stepBytes += size;
        _peakStepBytes = Math.Max(_peakStepBytes, _stepBytes);
        if (_block != 0 && _offset + size <= _blockSize)
        {
            nint p = _block + (nint)_offset;
            _offset += size;
            return p;
        }
        // Overflow for this step only; Reset folds it into one bigger block.
        nint o = _pool.Rent(size);
        _overflow.Add((o, size));
        return o;
    }

    /// <summary>Takes a contiguous tensor of <paramref name="dtype"/> and <paramref name="shape"/> for this step (uninitialised).</summary>
    public TensorView Take(DType dtype, params ReadOnlySpan<long> shape)
    {
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentOutOfRangeException(nameof(shape), d, "Expected every dimension >= 0.");
            count = checked(count * d);
        }
        return new TensorView(Take(checked(count * dtype.SizeInBytes())), dtype, Location, shape);
    }

    /// <summary>Takes <paramref name="length"/> floats of host memory as a span (host arenas only).</summary>
    public unsafe Span<T> TakeSpan<T>(int length) where T : unmanaged
    {
        if (Location != MemoryLocation.Host) throw new InvalidOperationException("Only a host arena can hand out spans.");
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, "Expected a length >= 0.");
        return new Span<T>((void*)Take((long)length * sizeof(T)), length);
    }

    private void Grow(long bytes)
    {
        long size = MemoryPool.SizeClass(bytes);
        if (size <= _blockSize) return;
        if (_block != 0) _pool.Return(_block);
        _block = _pool.Rent(size);
        _blockSize = size;
    }

    /// <summary>Returns all blocks to the pool.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        foreach (var (address, _) in _overflow) _pool.Return(address);
        _overflow.Clear();
        if (_block != 0) _pool.Return(_block);
        _block = 0;
        _disposed = true;
    }
}
