using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>
/// This machine's own ceilings, measured at run time so CPU benchmarks can be reported as a
/// fraction of what the hardware actually delivers (not a datasheet): multi-threaded memory copy
/// bandwidth and the FP32 fused-multiply-add peak over all cores.
/// </summary>
/// <param name="CopyBandwidthGBps">Copy bandwidth in GB/s (10^9), counting bytes read plus bytes written, as STREAM "copy" does.</param>
/// <param name="FmaPeakGflops">FP32 FMA peak in GFLOP/s (an FMA counts as 2 FLOPs).</param>
/// <param name="Threads">Threads used by both measurements.</param>
/// <param name="VectorBits">SIMD width of the FMA loop (128, 256 or 512).</param>
public sealed record CpuMachineLimits(double CopyBandwidthGBps, double FmaPeakGflops, int Threads, int VectorBits)
{
    private static readonly Lazy<CpuMachineLimits> Cached = new(() => Measure(), LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Measured once per process, then cached (about half a second).</summary>
    public static CpuMachineLimits Current => Cached.Value;

    /// <summary>Measures both limits now.</summary>
    /// <param name="copyBytesPerThread">Bytes each thread copies per pass; large enough to miss every cache level.</param>
    /// <param name="threads">Threads to use; 0 = all logical cores.</param>
    public static CpuMachineLimits Measure(long copyBytesPerThread = 64L << 20, int threads = 0)
    {
        if (copyBytesPerThread < 4096) throw new ArgumentOutOfRangeException(nameof(copyBytesPerThread), copyBytesPerThread, "Expected at least 4096 bytes per thread.");
        if (threads < 0) throw new ArgumentOutOfRangeException(nameof(threads), threads, "Expected 0 (all cores) or a positive count.");
        if (threads == 0) threads = Environment.ProcessorCount;
        double copy = MeasureCopyBandwidth(copyBytesPerThread, threads);
        var (fma, bits) = MeasureFmaPeak(threads);
        return new CpuMachineLimits(copy, fma, threads, bits);
    }

    /// <summary>Best of several passes of a parallel Buffer.MemoryCopy over private buffers.</summary>
    private static unsafe double MeasureCopyBandwidth(long bytesPerThread, int threads)
    {
        var src = new nint[threads];
        var dst = new nint[threads];
        try
        {
            for (int t = 0; t < threads; t++)
            {
                src[t] = (nint)NativeMemory.AlignedAlloc((nuint)bytesPerThread, 64);
                dst[t] = (nint)NativeMemory.AlignedAlloc((nuint)bytesPerThread, 64);
                // Touch every page so the first pass does not time page faults.
                NativeMemory.Fill((void*)src[t], (nuint)bytesPerThread, 1);
                NativeMemory.Clear((void*)dst[t], (nuint)bytesPerThread);
            }
            double best = 0;
            for (int pass = 0; pass < 4; pass++)
            {
                using var barrier = new Barrier(threads);
                var sw = new Stopwatch();
                RunOnThreads(threads, t =>
                {
                    barrier.SignalAndWait();
                    if (t == 0) sw.Start();
                    Buffer.MemoryCopy((void*)src[t], (void*)dst[t], bytesPerThread, bytesPerThread);
                });
                sw.Stop();
                double seconds = sw.Elapsed.TotalSeconds;
                if (seconds > 0) best = Math.Max(best, 2.0 * bytesPerThread * threads / seconds / 1e9);
            }
            return best;
        }
        finally
        {
            for (int t = 0; t < threads; t++)
            {
                if (src[t] != 0) NativeMemory.AlignedFree((void*)src[t]);
                if (dst[t] != 0) NativeMemory.AlignedFree((void*)dst[t]);
            }
        }
    }

    /// <summary>Best of several runs of a register-only FMA loop on every thread at once.</summary>
    private static (double Gflops, int Bits) MeasureFmaPeak(int threads)
    {
        int lanes = Vector512.IsHardwareAccelerated ? 16 : Vector256.IsHardwareAccelerated ? 8 : 4;
        const long iterations = 20_000_000;
        // Calibrate the loop once (JIT tiering) before timing it.
        Sink(FmaLoop(lanes, 1000));
        double best = 0;
        for (int run = 0; run < 3; run++)
        {
            var sw = Stopwatch.StartNew();
            RunOnThreads(threads, _ => Sink(FmaLoop(lanes, iterations)));
            sw.Stop();
            double flops = 2.0 * lanes * FmaChains * iterations * threads;
            best = Math.Max(best, flops / sw.Elapsed.TotalSeconds / 1e9);
        }
        return (best, lanes * 32);
    }

    /// <summary>Independent FMA dependency chains: enough to cover FMA latency x issue width on current cores.</summary>
    internal const int FmaChains = 10;

    private static float FmaLoop(int lanes, long iterations) => lanes switch
    {
        16 => FmaLoop512(iterations),
        8 => FmaLoop256(iterations),
        _ => FmaLoop128(iterations),
    };

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop256(long iterations)
    {
        var a = Vector256.Create(0.999999f);
        var b = Vector256.Create(1e-7f);
        Vector256<float> c0 = Vector256.Create(1f), c1 = c0 + b, c2 = c1 + b, c3 = c2 + b, c4 = c3 + b;
        Vector256<float> c5 = c4 + b, c6 = c5 + b, c7 = c6 + b, c8 = c7 + b, c9 = c8 + b;
        for (long i = 0; i < iterations; i++)
        {
            c0 = Vector256.FusedMultiplyAdd(c0, a, b); c1 = Vector256.FusedMultiplyAdd(c1, a, b);
            c2 = Vector256.FusedMultiplyAdd(c2, a, b); c3 = Vector256.FusedMultiplyAdd(c3, a, b);
            c4 = Vector256.FusedMultiplyAdd(c4, a, b); c5 = Vector256.FusedMultiplyAdd(c5, a, b);
            c6 = Vector256.FusedMultiplyAdd(c6, a, b); c7 = Vector256.FusedMultiplyAdd(c7, a, b);
            c8 = Vector256.FusedMultiplyAdd(c8, a, b); c9 = Vector256.FusedMultiplyAdd(c9, a, b);
        }
        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop512(long iterations)
    {
        var a = Vector512.Create(0.999999f);
        var b = Vector512.Create(1e-7f);
        Vector512<float> c0 = Vector512.Create(1f), c1 = c0 + b, c2 = c1 + b, c3 = c2 + b, c4 = c3 + b;
        Vector512<float> c5 = c4 + b, c6 = c5 + b, c7 = c6 + b, c8 = c7 + b, c9 = c8 + b;
        for (long i = 0; i < iterations; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(c0, a, b); c1 = Vector512.FusedMultiplyAdd(c1, a, b);
            c2 = Vector512.FusedMultiplyAdd(c2, a, b); c3 = Vector512.FusedMultiplyAdd(c3, a, b);
            c4 = Vector512.FusedMultiplyAdd(c4, a, b); c5 = Vector512.FusedMultiplyAdd(c5, a, b);
            c6 = Vector512.FusedMultiplyAdd(c6, a, b); c7 = Vector512.FusedMultiplyAdd(c7, a, b);
            c8 = Vector512.FusedMultiplyAdd(c8, a, b); c9 = Vector512.FusedMultiplyAdd(c9, a, b);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop128(long iterations)
    {
        var a = Vector128.Create(0.999999f);
        var b = Vector128.Create(1e-7f);
        Vector128<float> c0 = Vector128.Create(1f), c1 = c0 + b, c2 = c1 + b, c3 = c2 + b, c4 = c3 + b;
        Vector128<float> c5 = c4 + b, c6 = c5 + b, c7 = c6 + b, c8 = c7 + b, c9 = c8 + b;
        for (long i = 0; i < iterations; i++)
        {
            c0 = Vector128.FusedMultiplyAdd(c0, a, b); c1 = Vector128.FusedMultiplyAdd(c1, a, b);
            c2 = Vector128.FusedMultiplyAdd(c2, a, b); c3 = Vector128.FusedMultiplyAdd(c3, a, b);
            c4 = Vector128.FusedMultiplyAdd(c4, a, b); c5 = Vector128.FusedMultiplyAdd(c5, a, b);
            c6 = Vector128.FusedMultiplyAdd(c6, a, b); c7 = Vector128.FusedMultiplyAdd(c7, a, b);
            c8 = Vector128.FusedMultiplyAdd(c8, a, b); c9 = Vector128.FusedMultiplyAdd(c9, a, b);
        }
        return Vector128.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9);
    }

    private static float _sink;

    // Keeps the loop's result alive so the JIT cannot drop the work.
    private static void Sink(float value) => Volatile.Write(ref _sink, value);

    /// <summary>Runs <paramref name="body"/> on <paramref name="threads"/> dedicated threads and joins them.</summary>
    private static void RunOnThreads(int threads, Action<int> body)
    {
        var list = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            list[t] = new Thread(() => body(id)) { IsBackground = true };
        }
        foreach (var th in list) th.Start();
        foreach (var th in list) th.Join();
    }
}
