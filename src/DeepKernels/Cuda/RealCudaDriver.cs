using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using DeepKernels.Cuda.Interop;
using DeepKernels.Cuda.Kernels;

namespace DeepKernels.Cuda;

/// <summary>
/// <see cref="ICudaDriver"/> over the real CUDA driver (libcuda.so.1 / libcuda.so / nvcuda.dll).
/// Every non-zero CUresult becomes a <see cref="CudaException"/> carrying the call,
/// cuGetErrorName and cuGetErrorString.
/// </summary>
public sealed unsafe class RealCudaDriver : ICudaDriver
{
    /// <summary>The oldest driver the kernels and bindings support (cuLaunchKernelEx arrived in 11.8).</summary>
    public const int MinimumDriverVersion = 11080;

    private readonly IReadOnlyList<string> _libraryCandidates;
    private readonly KernelImage? _image;
    private readonly ConcurrentDictionary<int, nint> _pools = new();

    /// <summary>The driver found by the default probing (libcuda.so.1, then libcuda.so; nvcuda.dll on Windows).</summary>
    public RealCudaDriver()
        : this(CudaLibrary.DefaultCandidates, null)
    {
    }

    /// <summary>
    /// Test hook: probe <paramref name="libraryCandidates"/> instead of the default names (a missing
    /// name simulates a machine without the driver) and check kernels against <paramref name="image"/>.
    /// </summary>
    internal RealCudaDriver(IReadOnlyList<string> libraryCandidates, KernelImage? image)
    {
        _libraryCandidates = libraryCandidates;
        _image = image;
    }

    /// <summary>The shared instance with default probing.</summary>
    public static RealCudaDriver Default { get; } = new();

    /// <inheritdoc />
    public string Name => "cuda";

    private KernelImage Image => _image ?? KernelImage.Current;

    /// <inheritdoc />
    public CudaProbeResult Probe()
    {
        int version = 0;
        try
        {
            if (!CudaLibrary.TryLoad(_libraryCandidates, out string missing))
                return new CudaProbeResult(CudaStatus.DriverLibraryMissing, $"CUDA driver library missing: {missing}.", 0, []);
            if (CudaNative.cuDriverGetVersion(&version) != CudaResult.Success) version = 0;
            int init = CudaNative.cuInit(0);
            if (init != CudaResult.Success)
            {
                var (name, text) = CudaResult.Describe(init);
                string what = $"cuInit returned {name} ({text})";
                return init switch
                {
                    CudaResult.ErrorNoDevice => new(CudaStatus.NoDevice, $"CUDA driver {FormatVersion(version)} is installed but there is no CUDA device: {what}.", version, []),
                    CudaResult.ErrorInsufficientDriver => new(CudaStatus.DriverTooOld, $"CUDA driver {FormatVersion(version)} is too old: {what}.", version, []),
                    34 => new(CudaStatus.DriverLibraryMissing, $"Only the CUDA stub library is installed, not a real driver: {what}.", version, []),
                    _ => new(CudaStatus.NoDevice, $"CUDA driver {FormatVersion(version)} could not initialise: {what}.", version, []),
                };
            }
            if (version < MinimumDriverVersion)
                return new(CudaStatus.DriverTooOld, $"CUDA driver {FormatVersion(version)} is too old: DeepKernels needs {FormatVersion(MinimumDriverVersion)} or newer.", version, []);
            int count = DeviceCount;
            if (count == 0)
                return new(CudaStatus.NoDevice, $"CUDA driver {FormatVersion(version)} reports no device.", version, []);
            var devices = new List<CudaDeviceInfo>(count);
            for (int i = 0; i < count; i++) devices.Add(GetDeviceInfo(i));
            var (ready, reason) = KernelCompatibility.Check(Image, devices);
            return new(ready ? CudaStatus.Ready : CudaStatus.KernelsNotBuilt, $"{reason} (driver {FormatVersion(version)}).", version, devices);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return new(CudaStatus.DriverLibraryMissing, $"CUDA driver library unusable: {e.Message}", version, []);
        }
        catch (Exception e)
        {
            return new(CudaStatus.NoDevice, $"CUDA probe failed: {e.GetType().Name}: {e.Message}", version, []);
        }
    }

    /// <summary>"12.4" from 12040.</summary>
    public static string FormatVersion(int version) =>
        version <= 0 ? "(unknown version)" : $"{version / 1000}.{version % 1000 / 10}";

    /// <inheritdoc />
    public int DeviceCount
    {
        get
        {
            int count;
            Check(CudaNative.cuDeviceGetCount(&count), "cuDeviceGetCount");
            return count;
        }
    }

    /// <inheritdoc />
    public CudaDeviceInfo GetDeviceInfo(int ordinal)
    {
        int device = Device(ordinal);
        byte* name = stackalloc byte[256];
        Check(CudaNative.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        nuint total;
        Check(CudaNative.cuDeviceTotalMem_v2(&total, device), "cuDeviceTotalMem_v2");
        return new CudaDeviceInfo(
            ordinal,
            Marshal.PtrToStringUTF8((nint)name) ?? "",
            Attribute(CudaDeviceAttribute.ComputeCapabilityMajor, device),
            Attribute(CudaDeviceAttribute.ComputeCapabilityMinor, device),
            Attribute(CudaDeviceAttribute.MultiprocessorCount, device),
            (long)total,
            Attribute(CudaDeviceAttribute.MaxSharedMemoryPerBlockOptin, device),
            Attribute(CudaDeviceAttribute.L2CacheSize, device),
            Attribute(CudaDeviceAttribute.ClockRate, device),
            Attribute(CudaDeviceAttribute.MemoryClockRate, device),
            Attribute(CudaDeviceAttribute.GlobalMemoryBusWidth, device));
    }

    /// <inheritdoc />
    public nint RetainPrimaryContext(int ordinal)
    {
        int device = Device(ordinal);
        nint context;
        Check(CudaNative.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        Check(CudaNative.cuCtxSetCurrent(context), "cuCtxSetCurrent");
        return context;
    }

    /// <inheritdoc />
    public void ReleasePrimaryContext(int ordinal) =>
        Check(CudaNative.cuDevicePrimaryCtxRelease_v2(Device(ordinal)), "cuDevicePrimaryCtxRelease_v2");

    /// <inheritdoc />
    public void SetCurrentContext(nint context) => Check(CudaNative.cuCtxSetCurrent(context), "cuCtxSetCurrent");

    /// <inheritdoc />
    public nint LoadModule(ReadOnlySpan<byte> image)
    {
        if (image.IsEmpty) throw new ArgumentException("Expected a non-empty fatbin, cubin or PTX image.", nameof(image));
        nint module;
        fixed (byte* p = image) Check(CudaNative.cuModuleLoadData(&module, p), "cuModuleLoadData");
        return module;
    }

    /// <inheritdoc />
    public void UnloadModule(nint module) => Check(CudaNative.cuModuleUnload(module), "cuModuleUnload");

    /// <inheritdoc />
    public nint GetFunction(nint module, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        nint function;
        int r = CudaNative.cuModuleGetFunction(&function, module, name);
        if (r != CudaResult.Success) throw CudaResult.Exception($"cuModuleGetFunction(\"{name}\")", r);
        return function;
    }

    /// <inheritdoc />
    public int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute)
    {
        int value;
        Check(CudaNative.cuFuncGetAttribute(&value, attribute, function), "cuFuncGetAttribute");
        return value;
    }

    /// <inheritdoc />
    public void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value) =>
        Check(CudaNative.cuFuncSetAttribute(function, attribute, value), "cuFuncSetAttribute");

    /// <inheritdoc />
    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes)
    {
        int blocks;
        Check(CudaNative.cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, function, blockSize, dynamicSharedBytes), "cuOccupancyMaxActiveBlocksPerMultiprocessor");
        return blocks;
    }

    /// <inheritdoc />
    public ulong Allocate(nuint bytes)
    {
        ulong pointer;
        Check(CudaNative.cuMemAlloc_v2(&pointer, bytes), "cuMemAlloc_v2");
        return pointer;
    }

    /// <inheritdoc />
    public void Free(ulong pointer) => Check(CudaNative.cuMemFree_v2(pointer), "cuMemFree_v2");

    /// <inheritdoc />
    public ulong AllocateAsync(nuint bytes, nint stream)
    {
        int device;
        Check(CudaNative.cuCtxGetDevice(&device), "cuCtxGetDevice");
        nint pool = _pools.GetOrAdd(device, static d =>
        {
            nint p;
            Check(CudaNative.cuDeviceGetDefaultMemPool(&p, d), "cuDeviceGetDefaultMemPool");
            // Keep freed blocks in the pool instead of returning them to the OS at each sync,
            // so steady-state decode steps do not reach the OS allocator.
            ulong threshold = ulong.MaxValue;
            Check(CudaNative.cuMemPoolSetAttribute(p, CudaNative.MemPoolAttributeReleaseThreshold, &threshold), "cuMemPoolSetAttribute");
            return p;
        });
        ulong pointer;
        Check(CudaNative.cuMemAllocFromPoolAsync(&pointer, bytes, pool, stream), "cuMemAllocFromPoolAsync");
        return pointer;
    }

    /// <inheritdoc />
    public void FreeAsync(ulong pointer, nint stream) => Check(CudaNative.cuMemFreeAsync(pointer, stream), "cuMemFreeAsync");

    /// <inheritdoc />
    public nint AllocateHost(nuint bytes)
    {
        void* p;
        Check(CudaNative.cuMemAllocHost_v2(&p, bytes), "cuMemAllocHost_v2");
        return (nint)p;
    }

    /// <inheritdoc />
    public void FreeHost(nint pointer) => Check(CudaNative.cuMemFreeHost((void*)pointer), "cuMemFreeHost");

    /// <inheritdoc />
    public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream) =>
        Check(CudaNative.cuMemcpyHtoDAsync_v2(destination, (void*)source, bytes, stream), "cuMemcpyHtoDAsync_v2");

    /// <inheritdoc />
    public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream) =>
        Check(CudaNative.cuMemcpyDtoHAsync_v2((void*)destination, source, bytes, stream), "cuMemcpyDtoHAsync_v2");

    /// <inheritdoc />
    public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream) =>
        Check(CudaNative.cuMemcpyDtoDAsync_v2(destination, source, bytes, stream), "cuMemcpyDtoDAsync_v2");

    /// <inheritdoc />
    public void Memset(ulong destination, byte value, nuint bytes, nint stream) =>
        Check(CudaNative.cuMemsetD8Async(destination, value, bytes, stream), "cuMemsetD8Async");

    /// <inheritdoc />
    public nint CreateStream()
    {
        nint stream;
        Check(CudaNative.cuStreamCreate(&stream, CudaNative.StreamNonBlocking), "cuStreamCreate");
        return stream;
    }

    /// <inheritdoc />
    public void DestroyStream(nint stream) => Check(CudaNative.cuStreamDestroy_v2(stream), "cuStreamDestroy_v2");

    /// <inheritdoc />
    public void SynchronizeStream(nint stream) => Check(CudaNative.cuStreamSynchronize(stream), "cuStreamSynchronize");

    /// <inheritdoc />
    public nint CreateEvent()
    {
        nint evt;
        Check(CudaNative.cuEventCreate(&evt, 0), "cuEventCreate");
        return evt;
    }

    /// <inheritdoc />
    public void DestroyEvent(nint evt) => Check(CudaNative.cuEventDestroy_v2(evt), "cuEventDestroy_v2");

    /// <inheritdoc />
    public void RecordEvent(nint evt, nint stream) => Check(CudaNative.cuEventRecord(evt, stream), "cuEventRecord");

    /// <inheritdoc />
    public void SynchronizeEvent(nint evt) => Check(CudaNative.cuEventSynchronize(evt), "cuEventSynchronize");

    /// <inheritdoc />
    public float ElapsedMilliseconds(nint start, nint end)
    {
        float ms;
        Check(CudaNative.cuEventElapsedTime(&ms, start, end), "cuEventElapsedTime");
        return ms;
    }

    /// <inheritdoc />
    public void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster)
    {
        if (cluster.Volume <= 1)
        {
            Check(CudaNative.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, dynamicSharedBytes, stream, arguments, null), "cuLaunchKernel");
            return;
        }
        var attribute = new CudaLaunchAttribute { Id = CudaLaunchAttribute.ClusterDimension, X = cluster.X, Y = cluster.Y, Z = cluster.Z };
        var config = new CudaLaunchConfig
        {
            GridDimX = grid.X, GridDimY = grid.Y, GridDimZ = grid.Z,
            BlockDimX = block.X, BlockDimY = block.Y, BlockDimZ = block.Z,
            SharedMemBytes = dynamicSharedBytes,
            Stream = stream,
            Attributes = &attribute,
            AttributeCount = 1,
        };
        Check(CudaNative.cuLaunchKernelEx(&config, function, arguments, null), "cuLaunchKernelEx");
    }

    /// <inheritdoc />
    public byte[] EncodeTensorMapTiled(int elementBytes, ulong global, ReadOnlySpan<ulong> dims, ReadOnlySpan<ulong> strides, ReadOnlySpan<uint> box, int swizzleBytes)
    {
        // CUtensorMapDataType: UINT8 = 0, UINT16 = 1, UINT32 = 2, UINT64 = 4.
        uint dataType = elementBytes switch
        {
            1 => 0u,
            2 => 1u,
            4 => 2u,
            8 => 4u,
            _ => throw new ArgumentOutOfRangeException(nameof(elementBytes), elementBytes, "Expected 1, 2, 4 or 8 bytes per element."),
        };
        // CUtensorMapSwizzle: NONE = 0, 32B = 1, 64B = 2, 128B = 3.
        uint swizzle = swizzleBytes switch
        {
            0 => 0u,
            32 => 1u,
            64 => 2u,
            128 => 3u,
            _ => throw new ArgumentOutOfRangeException(nameof(swizzleBytes), swizzleBytes, "Expected 0, 32, 64 or 128."),
        };
        if (dims.Length is < 1 or > 5) throw new ArgumentException($"Expected 1 to 5 dims, got {dims.Length}.", nameof(dims));
        if (strides.Length != dims.Length - 1) throw new ArgumentException($"Expected {dims.Length - 1} strides, got {strides.Length}.", nameof(strides));
        if (box.Length != dims.Length) throw new ArgumentException($"Expected {dims.Length} box extents, got {box.Length}.", nameof(box));
        var map = new byte[128];
        Span<uint> elementStrides = stackalloc uint[5];
        elementStrides.Fill(1);
        fixed (byte* m = map)
        fixed (ulong* d = dims)
        fixed (ulong* s = strides)
        fixed (uint* b = box)
        fixed (uint* e = elementStrides)
        {
            ulong dummy = 0;
            int result;
            try
            {
                // Interleave NONE, L2 promotion 256B (3), out-of-bounds fill NONE (zeros).
                result = CudaNative.cuTensorMapEncodeTiled(m, dataType, (uint)dims.Length, (nint)global, d, strides.Length > 0 ? s : &dummy, b, e, 0, swizzle, 3, 0);
            }
            catch (EntryPointNotFoundException ex)
            {
                throw new NotSupportedException("This CUDA driver has no cuTensorMapEncodeTiled (TMA needs a CUDA 12 driver).", ex);
            }
            Check(result, "cuTensorMapEncodeTiled");
        }
        return map;
    }

    private static int Device(int ordinal)
    {
        int device;
        Check(CudaNative.cuDeviceGet(&device, ordinal), "cuDeviceGet");
        return device;
    }

    private static int Attribute(CudaDeviceAttribute attribute, int device)
    {
        int value;
        Check(CudaNative.cuDeviceGetAttribute(&value, attribute, device), "cuDeviceGetAttribute");
        return value;
    }

    private static void Check(int result, string call) => CudaResult.Check(result, call);
}
