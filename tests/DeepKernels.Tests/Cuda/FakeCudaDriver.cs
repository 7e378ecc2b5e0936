using System.Runtime.InteropServices;
using DeepKernels.Cuda;

namespace DeepKernels.Tests.Cuda;

/// <summary>
/// An in-process ICudaDriver for testing the backend's bookkeeping without a GPU: device memory
/// is host memory, streams and events are counters, and launches are recorded (not run).
/// </summary>
internal sealed unsafe class FakeCudaDriver : ICudaDriver, IDisposable
{
    private readonly Dictionary<ulong, nuint> _allocations = [];
    private readonly object _gate = new();
    private long _nextHandle = 0x1000;

    public string Name => "fake";

    public bool PoolSupported { get; set; } = true;

    /// <summary>When set, every call throws as a driver that has shut down would.</summary>
    public bool Broken { get; set; }

    public int MaxSharedOptin { get; set; } = 227 * 1024;

    public Dictionary<string, int> Calls { get; } = [];

    public List<(string Function, Dim3 Grid, Dim3 Block, uint Shared, Dim3 Cluster, ulong[] Args)> Launches { get; } = [];

    public List<(nint Function, CudaFunctionAttribute Attribute, int Value)> AttributesSet { get; } = [];

    public int LiveAllocations { get { lock (_gate) return _allocations.Count; } }

    public int LaunchArgumentCount { get; set; }

    /// <summary>The stream of every stream-ordered allocation and free, in call order.</summary>
    public List<nint> AsyncStreams { get; } = [];

    private void Count(string call)
    {
        if (Broken) throw new CudaException(call, 4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down");
        lock (_gate) Calls[call] = Calls.GetValueOrDefault(call) + 1;
    }

    public int CallCount(string call) { lock (_gate) return Calls.GetValueOrDefault(call); }

    public CudaProbeResult Probe() => new(CudaStatus.Ready, "fake device", 12040, [GetDeviceInfo(0)]);

    public int DeviceCount => 1;

    public CudaDeviceInfo GetDeviceInfo(int ordinal) => new(ordinal, "Fake GPU", 9, 0, 4, 1L << 30, MaxSharedOptin, 1 << 20, 0, 0, 0);

    public nint RetainPrimaryContext(int ordinal) { Count("retain"); return 0x7000 + ordinal; }

    public void ReleasePrimaryContext(int ordinal) => Count("release");

    public void SetCurrentContext(nint context) => Count("setCurrent");

    public nint LoadModule(ReadOnlySpan<byte> image) { Count("loadModule"); return NextHandle(); }

    public void UnloadModule(nint module) => Count("unloadModule");

    public nint GetFunction(nint module, string name)
    {
        Count("getFunction");
        if (name.StartsWith("missing", StringComparison.Ordinal)) throw new CudaException("cuModuleGetFunction", 500, "CUDA_ERROR_NOT_FOUND", "named symbol not found");
        return NextHandle();
    }

    public int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute) => attribute switch
    {
        CudaFunctionAttribute.MaxThreadsPerBlock => 1024,
        CudaFunctionAttribute.SharedSizeBytes => 1024,
        _ => 0,
    };

    public void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value)
    {
        Count("setAttribute");
        AttributesSet.Add((function, attribute, value));
    }

    /// <summary>What the occupancy query answers.</summary>
    public int OccupancyBlocks { get; set; } = 1;

    /// <summary>Every occupancy query: block size and dynamic shared memory.</summary>
    public List<(int BlockSize, nuint DynamicShared)> OccupancyQueries { get; } = [];

    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes)
    {
        Count("occupancy");
        lock (_gate) OccupancyQueries.Add((blockSize, dynamicSharedBytes));
        return OccupancyBlocks;
    }

    public ulong Allocate(nuint bytes)
    {
        Count("alloc");
        ulong p = (ulong)NativeMemory.AllocZeroed(bytes);
        lock (_gate) _allocations.Add(p, bytes);
        return p;
    }

    public void Free(ulong pointer)
    {
        Count("free");
        lock (_gate)
        {
            if (!_allocations.Remove(pointer)) throw new CudaException("cuMemFree_v2", 1, "CUDA_ERROR_INVALID_VALUE", "invalid argument");
        }
        NativeMemory.Free((void*)pointer);
    }

    public ulong AllocateAsync(nuint bytes, nint stream)
    {
        if (!PoolSupported) throw new CudaException("cuMemAllocFromPoolAsync", 801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported");
        Count("allocAsync");
        lock (_gate) AsyncStreams.Add(stream);
        ulong p = (ulong)NativeMemory.AllocZeroed(bytes);
        lock (_gate) _allocations.Add(p, bytes);
        return p;
    }

    public void FreeAsync(ulong pointer, nint stream)
    {
        Count("freeAsync");
        lock (_gate) AsyncStreams.Add(stream);
        lock (_gate) _allocations.Remove(pointer);
        NativeMemory.Free((void*)pointer);
    }

    public nint AllocateHost(nuint bytes) { Count("allocHost"); return (nint)NativeMemory.AllocZeroed(bytes); }

    public void FreeHost(nint pointer) { Count("freeHost"); NativeMemory.Free((void*)pointer); }

    public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream) { Count("htod"); Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes); }

    public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream) { Count("dtoh"); Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes); }

    public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream) { Count("dtod"); Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes); }

    public void Memset(ulong destination, byte value, nuint bytes, nint stream) { Count("memset"); NativeMemory.Fill((void*)destination, bytes, value); }

    // Handle value 0 on purpose: a stream handle of 0 must still count as a live resource.
    public nint CreateStream() { Count("createStream"); return 0; }

    public void DestroyStream(nint stream) => Count("destroyStream");

    public void SynchronizeStream(nint stream) => Count("syncStream");

    public nint CreateEvent() { Count("createEvent"); return NextHandle(); }

    public void DestroyEvent(nint evt) => Count("destroyEvent");

    public void RecordEvent(nint evt, nint stream) => Count("recordEvent");

    public void SynchronizeEvent(nint evt) => Count("syncEvent");

    public float ElapsedMilliseconds(nint start, nint end) { Count("elapsed"); return 1.5f; }

    public void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster)
    {
        Count("launch");
        // Read each argument as 8 bytes; tests mask 4-byte ones.
        var args = new ulong[LaunchArgumentCount];
        for (int i = 0; i < args.Length; i++) args[i] = *(ulong*)arguments[i];
        Launches.Add(($"0x{function:x}", grid, block, dynamicSharedBytes, cluster, args));
    }

    private nint NextHandle() => (nint)Interlocked.Increment(ref _nextHandle);

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var p in _allocations.Keys) NativeMemory.Free((void*)p);
            _allocations.Clear();
        }
    }
}
