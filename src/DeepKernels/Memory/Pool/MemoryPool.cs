using DeepKernels.Tensors;

namespace DeepKernels.Memory.Pool;

/// <summary>
/// A caching pool over an <see cref="IMemorySource"/>: requests are rounded up to a size class
/// (powers of two from 256 bytes up to 1 MiB, then multiples of 1/8 of the next power of two), and a
/// returned block is kept for the next request of the same class, so a steady workload stops
/// allocating after warm-up. Thread-safe. Disposing frees every cached block; blocks still
/// rented at that point are freed when they are returned.
/// </summary>
public sealed class MemoryPool : IDisposable
{
    private const long MinBlock = 256;
    private readonly IMemorySource _source;
    private readonly Dictionary<long, Stack<nint>> _free = [];
    private readonly Dictionary<nint, long> _rented = [];
    private readonly object _lock = new();
    private long _reserved, _inUse, _peak, _allocations, _releases, _rents;
    private bool _disposed;

    /// <summary>A pool over <paramref name="source"/>.</summary>
    public MemoryPool(IMemorySource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        _source = source;
    }

    /// <summary>A pool of aligned native host memory.</summary>
    public static MemoryPool CreateHost() => new(HostMemorySource.Instance);

    /// <summary>Where the pool's memory lives.</summary>
    public MemoryLocation Location => _source.Location;

    /// <summary>Alignment of every block.</summary>
    public int Alignment => _source.Alignment;

    /// <summary>The size class a request of <paramref name="bytes"/> is served from.</summary>
    public static long SizeClass(long bytes)
    {
        if (bytes <= MinBlock) return MinBlock;
        long pow = 1L << (int)(64 - long.LeadingZeroCount(bytes - 1)); // next power of two
        if (pow <= 1 << 20) return pow;
        long quarter = pow / 8; // eighths of the next power of two bound the waste at 12.5%
        return (bytes + quarter - 1) / quarter * quarter;
    }

    /// <summary>Rents a block of at least <paramref name="bytes"/> bytes; return it with <see cref="Return"/>.</summary>
    public nint Rent(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "Expected a size > 0.");
        long size = SizeClass(bytes);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _rents++;
            if (!_free.TryGetValue(size, out var stack) || !stack.TryPop(out nint address))
            {
                address = _source.Allocate(size);
                _allocations++;
                _reserved += size;
            }
            _rented[address] = size;
            _inUse += size;
            _peak = Math.Max(_peak, _inUse);
            return address;
        }
    }

    /// <summary>Returns a block rented from this pool; returning twice or a foreign address throws.</summary>
    public void Return(nint address)
    {
        lock (_lock)
        {
            if (!_rented.Remove(address, out long size))
                throw new InvalidOperationException($"Address 0x{address:X} was not rented from this pool (double return or foreign block).");
            _inUse -= size;
            if (_disposed)
            {
                _source.Free(address, size);
                _reserved -= size;
                _releases++;
                return;
            }
            if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new Stack<nint>();
            stack.Push(address);
        }
    }

    /// <summary>Frees every cached (not rented) block back to the source.</summary>
    public void Trim()
    {
        lock (_lock)
        {
            foreach (var (size, stack) in _free)
            {
                while (stack.TryPop(out nint a))
                {
                    _source.Free(a, size);
                    _reserved -= size;
                    _releases++;
                }
            }
        }
    }

    /// <summary>The current statistics.</summary>
    public PoolStatistics Statistics
    {
        get
        {
            lock (_lock) return new PoolStatistics(_reserved, _inUse, _peak, _allocations, _releases, _rents);
        }
    }

    /// <summary>Frees cached blocks; rented blocks are freed as they come back.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            Trim();
            _disposed = true;
        }
    }
}
