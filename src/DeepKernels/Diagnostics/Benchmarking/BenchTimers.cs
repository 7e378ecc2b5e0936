using System.Diagnostics;
using DeepKernels.Cuda;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>Times one benchmark body: warm-up runs, then one sample per repeat, in milliseconds per run.</summary>
public interface IBenchTimer
{
    /// <summary>How the samples are taken ("stopwatch", "cuda-events"), written into reports.</summary>
    string Method { get; }

    /// <summary>Runs <paramref name="body"/> <paramref name="warmup"/> times untimed, then returns <paramref name="repeats"/> samples (ms per run).</summary>
    double[] Time(Action body, int warmup, int repeats);
}

/// <summary>
/// CPU timing with <see cref="Stopwatch"/>. Bodies shorter than <see cref="MinSampleMilliseconds"/>
/// are run several times per sample so that timer resolution and call overhead do not dominate.
/// Warm-up lasts at least <see cref="MinWarmupMilliseconds"/> (when any is asked for), so that the
/// tiered JIT has promoted the hot methods to optimized code before the first sample.
/// </summary>
public sealed class StopwatchTimer : IBenchTimer
{
    /// <summary>Target duration of one sample.</summary>
    public double MinSampleMilliseconds { get; init; } = 1.0;

    /// <summary>
    /// Shortest warm-up when <c>warmup</c> &gt; 0. A fixed count of 3 was not enough: the JIT starts
    /// counting calls only 100 ms after it last compiled a new method and promotes a method after 30
    /// calls, so the first cases of a run were timed in unoptimized code (act-quant M=1 measured
    /// 0.13 ms here, against 15 us once warm).
    /// </summary>
    public double MinWarmupMilliseconds { get; init; } = 400;

    /// <inheritdoc />
    public string Method => "stopwatch";

    /// <inheritdoc />
    public double[] Time(Action body, int warmup, int repeats)
    {
        ArgumentNullException.ThrowIfNull(body);
        Guard.NonNegative(warmup, nameof(warmup));
        Guard.Positive(repeats, nameof(repeats));
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < warmup || (warmup > 0 && sw.Elapsed.TotalMilliseconds < MinWarmupMilliseconds); i++) body();
        // One calibration run decides how many runs make up a sample.
        sw.Restart();
        body();
        double once = Math.Max(sw.Elapsed.TotalMilliseconds, 1e-6);
        int inner = (int)Math.Clamp(Math.Ceiling(MinSampleMilliseconds / once), 1, 100_000);
        var samples = new double[repeats];
        for (int r = 0; r < repeats; r++)
        {
            sw.Restart();
            for (int i = 0; i < inner; i++) body();
            samples[r] = sw.Elapsed.TotalMilliseconds / inner;
        }
        return samples;
    }
}

/// <summary>
/// GPU timing with CUDA events on one stream: warm-up launches, then per repeat an L2 flush
/// (a memset of a buffer larger than L2, outside the timed region, so every repeat starts
/// cold as a real layer would), an event before and after the body, and the elapsed time.
/// </summary>
public sealed class CudaEventTimer : IBenchTimer, IDisposable
{
    private readonly ICudaDriver _driver;
    private readonly nint _stream;
    private readonly ulong _flush;
    private readonly nuint _flushBytes;
    private readonly nint _start, _end;
    private bool _disposed;

    /// <summary>Creates events and a flush buffer of twice the L2 size (at least 8 MiB) on the current context.</summary>
    public CudaEventTimer(ICudaDriver driver, nint stream, long l2CacheBytes)
    {
        ArgumentNullException.ThrowIfNull(driver);
        Guard.NonNegative(l2CacheBytes, nameof(l2CacheBytes));
        _driver = driver;
        _stream = stream;
        _flushBytes = (nuint)Math.Max(2 * l2CacheBytes, 8L << 20);
        _flush = driver.Allocate(_flushBytes);
        _start = driver.CreateEvent();
        _end = driver.CreateEvent();
    }

    /// <summary>Bytes written before each repeat to evict L2.</summary>
    public long FlushBytes => (long)_flushBytes;

    /// <inheritdoc />
    public string Method => "cuda-events";

    /// <inheritdoc />
    public double[] Time(Action body, int warmup, int repeats)
    {
        ArgumentNullException.ThrowIfNull(body);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Guard.NonNegative(warmup, nameof(warmup));
        Guard.Positive(repeats, nameof(repeats));
        for (int i = 0; i < warmup; i++) body();
        _driver.SynchronizeStream(_stream);
        var samples = new double[repeats];
        for (int r = 0; r < repeats; r++)
        {
            _driver.Memset(_flush, (byte)r, _flushBytes, _stream);
            _driver.RecordEvent(_start, _stream);
            body();
            _driver.RecordEvent(_end, _stream);
            _driver.SynchronizeEvent(_end);
            samples[r] = _driver.ElapsedMilliseconds(_start, _end);
        }
        return samples;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _driver.DestroyEvent(_start);
        _driver.DestroyEvent(_end);
        _driver.Free(_flush);
    }
}

/// <summary>Order statistics of timing samples.</summary>
public static class BenchStatistics
{
    /// <summary>The median (mean of the two middle values for an even count).</summary>
    public static double Median(ReadOnlySpan<double> samples)
    {
        if (samples.IsEmpty) throw new ArgumentException("Expected at least one sample, got none.", nameof(samples));
        var sorted = samples.ToArray();
        Array.Sort(sorted);
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid]);
    }
}
