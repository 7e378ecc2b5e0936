using DeepKernels.Cuda;

namespace DeepKernels.Tests.Diagnostics;

/// <summary>An ICudaDriver fake that records the calls the benchmark harness makes, in order.</summary>
internal sealed class RecordingCudaDriver : ICudaDriver
{
    private readonly Queue<float> _elapsed;
    public List<string> Calls { get; } = [];
    public List<(ulong Pointer, nuint Bytes)> Allocations { get; } = [];
    public List<ulong> Freed { get; } = [];
    private long _nextHandle = 0x1000;

    public RecordingCudaDriver(params float[] elapsedMs) => _elapsed = new Queue<float>(elapsedMs);

    public string Name => "fake";
    public CudaProbeResult Probe() => new(CudaStatus.Ready, "fake", 12040, []);
    public int DeviceCount => 1;
    public CudaDeviceInfo GetDeviceInfo(int ordinal) => throw new NotSupportedException();
    public nint RetainPrimaryContext(int ordinal) => throw new NotSupportedException();
    public void ReleasePrimaryContext(int ordinal) => throw new NotSupportedException();
    public void SetCurrentContext(nint context) => throw new NotSupportedException();
    public nint LoadModule(ReadOnlySpan<byte> image) => throw new NotSupportedException();
    public void UnloadModule(nint module) => throw new NotSupportedException();
    public nint GetFunction(nint module, string name) => throw new NotSupportedException();
    public int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute) => throw new NotSupportedException();
    public void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value) => throw new NotSupportedException();
    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes) => throw new NotSupportedException();

    public ulong Allocate(nuint bytes)
    {
        ulong p = (ulong)Interlocked.Add(ref _nextHandle, 0x1000);
        Allocations.Add((p, bytes));
        Calls.Add("alloc");
        return p;
    }

    public void Free(ulong pointer) { Freed.Add(pointer); Calls.Add("free"); }
    public ulong AllocateAsync(nuint bytes, nint stream) => throw new NotSupportedException();
    public void FreeAsync(ulong pointer, nint stream) => throw new NotSupportedException();
    public nint AllocateHost(nuint bytes) => throw new NotSupportedException();
    public void FreeHost(nint pointer) => throw new NotSupportedException();
    public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream) => throw new NotSupportedException();
    public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream) => throw new NotSupportedException();
    public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream) => throw new NotSupportedException();
    public void Memset(ulong destination, byte value, nuint bytes, nint stream) => Calls.Add($"memset {bytes} on {stream}");
    public nint CreateStream() => throw new NotSupportedException();
    public void DestroyStream(nint stream) => throw new NotSupportedException();
    public void SynchronizeStream(nint stream) => Calls.Add($"sync {stream}");
    public nint CreateEvent() { Calls.Add("event"); return (nint)Interlocked.Increment(ref _nextHandle); }
    public void DestroyEvent(nint evt) => Calls.Add("destroy-event");
    public void RecordEvent(nint evt, nint stream) => Calls.Add($"record on {stream}");
    public void SynchronizeEvent(nint evt) => Calls.Add("wait-event");
    public float ElapsedMilliseconds(nint start, nint end) { Calls.Add("elapsed"); return _elapsed.Dequeue(); }
    public unsafe void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster) =>
        throw new NotSupportedException();
}
