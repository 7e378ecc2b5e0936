using DeepKernels.Cuda;

namespace DeepKernels.Tests.Cuda;

/// <summary>
/// Forwards every call to a real driver (the GPU or the kernel emulator) and counts the
/// transfers and synchronizations, so a test can assert that a call keeps its data on the device.
/// With <see cref="DeferHostToDeviceCopies"/> it also plays a device that lags behind the host:
/// host-to-device copies and event records are queued and run only when the host waits for them
/// (stream or event synchronization) or issues other stream work, reading their host source
/// then, so a staging buffer reused too early shows up as corrupted data.
/// </summary>
internal sealed class CountingCudaDriver(ICudaDriver inner) : ICudaDriver
{
    public int DeviceToHostCopies { get; private set; }
    public int HostToDeviceCopies { get; private set; }
    public int StreamSynchronizations { get; private set; }
    public int Launches { get; private set; }
    public int Allocations { get; private set; }
    public int EventSynchronizations { get; private set; }
    public int EventRecords { get; private set; }
    public int HostAllocations { get; private set; }
    public int HostFrees { get; private set; }

    /// <summary>Queue host-to-device copies (and event records) until the host waits; see the class remarks.</summary>
    public bool DeferHostToDeviceCopies { get; set; }

    /// <summary>Queued (deferred) operations: a copy, or an event record when Event is not null.</summary>
    private readonly List<(ulong Destination, nint Source, nuint Bytes, nint Stream, nint? Event)> _queue = [];

    public void Reset() => DeviceToHostCopies = HostToDeviceCopies = StreamSynchronizations = Launches = Allocations =
        EventSynchronizations = EventRecords = HostAllocations = HostFrees = 0;

    /// <summary>Runs the first <paramref name="count"/> queued operations (all by default).</summary>
    private void Flush(int count = int.MaxValue)
    {
        count = Math.Min(count, _queue.Count);
        for (int i = 0; i < count; i++)
        {
            var op = _queue[i];
            if (op.Event is { } evt) inner.RecordEvent(evt, op.Stream);
            else inner.CopyHostToDevice(op.Destination, op.Source, op.Bytes, op.Stream);
        }
        _queue.RemoveRange(0, count);
    }

    public string Name => inner.Name;
    public CudaProbeResult Probe() => inner.Probe();
    public int DeviceCount => inner.DeviceCount;
    public CudaDeviceInfo GetDeviceInfo(int ordinal) => inner.GetDeviceInfo(ordinal);
    public nint RetainPrimaryContext(int ordinal) => inner.RetainPrimaryContext(ordinal);
    public void ReleasePrimaryContext(int ordinal) => inner.ReleasePrimaryContext(ordinal);
    public void SetCurrentContext(nint context) => inner.SetCurrentContext(context);
    public nint LoadModule(ReadOnlySpan<byte> image) => inner.LoadModule(image);
    public void UnloadModule(nint module) => inner.UnloadModule(module);
    public nint GetFunction(nint module, string name) => inner.GetFunction(module, name);
    public int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute) => inner.GetFunctionAttribute(function, attribute);
    public void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value) => inner.SetFunctionAttribute(function, attribute, value);
    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes) => inner.MaxActiveBlocksPerMultiprocessor(function, blockSize, dynamicSharedBytes);
    public ulong Allocate(nuint bytes)
    {
        Allocations++;
        return inner.Allocate(bytes);
    }

    public void Free(ulong pointer)
    {
        Flush();
        inner.Free(pointer);
    }

    public ulong AllocateAsync(nuint bytes, nint stream)
    {
        Allocations++;
        return inner.AllocateAsync(bytes, stream);
    }

    public void FreeAsync(ulong pointer, nint stream)
    {
        Flush();
        inner.FreeAsync(pointer, stream);
    }

    public nint AllocateHost(nuint bytes)
    {
        HostAllocations++;
        return inner.AllocateHost(bytes);
    }

    public void FreeHost(nint pointer)
    {
        HostFrees++;
        Flush();
        inner.FreeHost(pointer);
    }

    public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream)
    {
        HostToDeviceCopies++;
        if (DeferHostToDeviceCopies) _queue.Add((destination, source, bytes, stream, null));
        else inner.CopyHostToDevice(destination, source, bytes, stream);
    }

    public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream)
    {
        DeviceToHostCopies++;
        Flush();
        inner.CopyDeviceToHost(destination, source, bytes, stream);
    }

    public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream)
    {
        Flush();
        inner.CopyDeviceToDevice(destination, source, bytes, stream);
    }

    public void Memset(ulong destination, byte value, nuint bytes, nint stream)
    {
        Flush();
        inner.Memset(destination, value, bytes, stream);
    }

    public nint CreateStream() => inner.CreateStream();
    public void DestroyStream(nint stream) => inner.DestroyStream(stream);

    public void SynchronizeStream(nint stream)
    {
        StreamSynchronizations++;
        Flush();
        inner.SynchronizeStream(stream);
    }

    public nint CreateEvent() => inner.CreateEvent();

    public void DestroyEvent(nint evt)
    {
        Flush();
        inner.DestroyEvent(evt);
    }

    public void RecordEvent(nint evt, nint stream)
    {
        EventRecords++;
        if (DeferHostToDeviceCopies) _queue.Add((0, 0, 0, stream, evt));
        else inner.RecordEvent(evt, stream);
    }

    public void SynchronizeEvent(nint evt)
    {
        EventSynchronizations++;
        // The device catches up to the event's latest record, and no further.
        Flush(_queue.FindLastIndex(op => op.Event == evt) + 1);
        inner.SynchronizeEvent(evt);
    }

    public float ElapsedMilliseconds(nint start, nint end) => inner.ElapsedMilliseconds(start, end);

    public unsafe void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster)
    {
        Launches++;
        Flush();
        inner.LaunchKernel(function, grid, block, dynamicSharedBytes, stream, arguments, cluster);
    }

    public byte[] EncodeTensorMapTiled(int elementBytes, ulong global, ReadOnlySpan<ulong> dims, ReadOnlySpan<ulong> strides, ReadOnlySpan<uint> box, int swizzleBytes) =>
        inner.EncodeTensorMapTiled(elementBytes, global, dims, strides, box, swizzleBytes);
}
