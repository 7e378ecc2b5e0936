using System.Collections.Concurrent;
using DeepKernels.Cuda;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>
/// An <see cref="ICudaDriver"/> decorator that remembers which kernels were launched, by name.
/// The bench harness wraps the real driver with it so every report says which kernels each case
/// ran; the GPU bundle uses that to give every kernel in the fatbin a benchmark and a
/// compute-sanitizer case without a hand-kept table. Everything else is forwarded unchanged.
/// </summary>
public sealed class KernelTraceDriver(ICudaDriver inner) : ICudaDriver
{
    private readonly ICudaDriver _inner = inner ?? throw new ArgumentNullException(nameof(inner));
    private readonly ConcurrentDictionary<nint, string> _names = new();
    private readonly ConcurrentDictionary<string, byte> _launched = new(StringComparer.Ordinal);

    /// <summary>The wrapped driver.</summary>
    public ICudaDriver Inner => _inner;

    /// <summary>Kernels launched since the last <see cref="Clear"/>, sorted by name.</summary>
    public IReadOnlyList<string> Launched => _launched.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>Forgets the kernels launched so far (function names stay known).</summary>
    public void Clear() => _launched.Clear();

    /// <inheritdoc />
    public string Name => _inner.Name;

    /// <inheritdoc />
    public CudaProbeResult Probe() => _inner.Probe();

    /// <inheritdoc />
    public int DeviceCount => _inner.DeviceCount;

    /// <inheritdoc />
    public CudaDeviceInfo GetDeviceInfo(int ordinal) => _inner.GetDeviceInfo(ordinal);

    /// <inheritdoc />
    public nint RetainPrimaryContext(int ordinal) => _inner.RetainPrimaryContext(ordinal);

    /// <inheritdoc />
    public void ReleasePrimaryContext(int ordinal) => _inner.ReleasePrimaryContext(ordinal);

    /// <inheritdoc />
    public void SetCurrentContext(nint context) => _inner.SetCurrentContext(context);

    /// <inheritdoc />
    public nint LoadModule(ReadOnlySpan<byte> image) => _inner.LoadModule(image);

    /// <inheritdoc />
    public void UnloadModule(nint module) => _inner.UnloadModule(module);

    /// <inheritdoc />
    public nint GetFunction(nint module, string name)
    {
        nint function = _inner.GetFunction(module, name);
        _names[function] = name;
        return function;
    }

    /// <inheritdoc />
    public int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute) => _inner.GetFunctionAttribute(function, attribute);

    /// <inheritdoc />
    public void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value) => _inner.SetFunctionAttribute(function, attribute, value);

    /// <inheritdoc />
    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes) =>
        _inner.MaxActiveBlocksPerMultiprocessor(function, blockSize, dynamicSharedBytes);

    /// <inheritdoc />
    public ulong Allocate(nuint bytes) => _inner.Allocate(bytes);

    /// <inheritdoc />
    public void Free(ulong pointer) => _inner.Free(pointer);

    /// <inheritdoc />
    public ulong AllocateAsync(nuint bytes, nint stream) => _inner.AllocateAsync(bytes, stream);

    /// <inheritdoc />
    public void FreeAsync(ulong pointer, nint stream) => _inner.FreeAsync(pointer, stream);

    /// <inheritdoc />
    public nint AllocateHost(nuint bytes) => _inner.AllocateHost(bytes);

    /// <inheritdoc />
    public void FreeHost(nint pointer) => _inner.FreeHost(pointer);

    /// <inheritdoc />
    public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream) => _inner.CopyHostToDevice(destination, source, bytes, stream);

    /// <inheritdoc />
    public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream) => _inner.CopyDeviceToHost(destination, source, bytes, stream);

    /// <inheritdoc />
    public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream) => _inner.CopyDeviceToDevice(destination, source, bytes, stream);

    /// <inheritdoc />
    public void Memset(ulong destination, byte value, nuint bytes, nint stream) => _inner.Memset(destination, value, bytes, stream);

    /// <inheritdoc />
    public nint CreateStream() => _inner.CreateStream();

    /// <inheritdoc />
    public void DestroyStream(nint stream) => _inner.DestroyStream(stream);

    /// <inheritdoc />
    public void SynchronizeStream(nint stream) => _inner.SynchronizeStream(stream);

    /// <inheritdoc />
    public nint CreateEvent() => _inner.CreateEvent();

    /// <inheritdoc />
    public void DestroyEvent(nint evt) => _inner.DestroyEvent(evt);

    /// <inheritdoc />
    public void RecordEvent(nint evt, nint stream) => _inner.RecordEvent(evt, stream);

    /// <inheritdoc />
    public void SynchronizeEvent(nint evt) => _inner.SynchronizeEvent(evt);

    /// <inheritdoc />
    public float ElapsedMilliseconds(nint start, nint end) => _inner.ElapsedMilliseconds(start, end);

    /// <inheritdoc />
    public unsafe void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster)
    {
        _launched[_names.TryGetValue(function, out string? name) ? name : $"<function 0x{function:x}>"] = 0;
        _inner.LaunchKernel(function, grid, block, dynamicSharedBytes, stream, arguments, cluster);
    }

    /// <inheritdoc />
    public byte[] EncodeTensorMapTiled(int elementBytes, ulong global, ReadOnlySpan<ulong> dims, ReadOnlySpan<ulong> strides, ReadOnlySpan<uint> box, int swizzleBytes) =>
        _inner.EncodeTensorMapTiled(elementBytes, global, dims, strides, box, swizzleBytes);
}
