using DeepKernels.Cuda;

namespace DeepKernels.Tests.Cuda;

/// <summary>
/// Forwards every call to a real driver (the GPU or the kernel emulator) and counts the
/// transfers and synchronizations, so a test can assert that a call keeps its data on the device.
/// </summary>
internal sealed class CountingCudaDriver(ICudaDriver inner) : ICudaDriver
{
    public int DeviceToHostCopies { get; private set; }
    public int HostToDeviceCopies { get; private set; }
    public int StreamSynchronizations { get; private set; }
    public int Launches { get; private set; }
    public int Allocations { get; private set; }

    public void Reset() => DeviceToHostCopies = HostToDeviceCopies = StreamSynchronizations = Launches = Allocations = 0;

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

    public void Free(ulong pointer) => inner.Free(pointer);
    public ulong AllocateAsync(nuint bytes, nint stream)
    {
        Allocations++;
        return inner.AllocateAsync(bytes, stream);
    }

    public void FreeAsync(ulong pointer, nint stream) => inner.FreeAsync(pointer, stream);
    public nint AllocateHost(nuint bytes) => inner.AllocateHost(bytes);
    public void FreeHost(nint pointer) => inner.FreeHost(pointer);

    public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream)
    {
        HostToDeviceCopies++;
        inner.CopyHostToDevice(destination, source, bytes, stream);
    }

    public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream)
    {
        DeviceToHostCopies++;
        inner.CopyDeviceToHost(destination, source, bytes, stream);
    }

    public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream) => inner.CopyDeviceToDevice(destination, source, bytes, stream);
    public void Memset(ulong destination, byte value, nuint bytes, nint stream) => inner.Memset(destination, value, bytes, stream);
    public nint CreateStream() => inner.CreateStream();
    public void DestroyStream(nint stream) => inner.DestroyStream(stream);

    public void SynchronizeStream(nint stream)
    {
        StreamSynchronizations++;
        inner.SynchronizeStream(stream);
    }

    public nint CreateEvent() => inner.CreateEvent();
    public void DestroyEvent(nint evt) => inner.DestroyEvent(evt);
    public void RecordEvent(nint evt, nint stream) => inner.RecordEvent(evt, stream);
    public void SynchronizeEvent(nint evt) => inner.SynchronizeEvent(evt);
    public float ElapsedMilliseconds(nint start, nint end) => inner.ElapsedMilliseconds(start, end);

    public unsafe void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster)
    {
        Launches++;
        inner.LaunchKernel(function, grid, block, dynamicSharedBytes, stream, arguments, cluster);
    }

    public byte[] EncodeTensorMapTiled(int elementBytes, ulong global, ReadOnlySpan<ulong> dims, ReadOnlySpan<ulong> strides, ReadOnlySpan<uint> box, int swizzleBytes) =>
        inner.EncodeTensorMapTiled(elementBytes, global, dims, strides, box, swizzleBytes);
}
