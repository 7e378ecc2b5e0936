using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Emulation;

/// <summary>
/// <see cref="ICudaDriver"/> over the kernel emulator: the same kernel sources compiled for the
/// CPU (libdeepkernels_emu.so), so the CUDA backend's launch path runs without a GPU. One
/// emulated device (compute capability 9.0); "device" memory is bounds-checked host memory;
/// streams execute in order (every operation completes before the call returns) and events
/// record wall-clock time. A module is the emulator library itself: <see cref="LoadModule"/>
/// accepts any image and kernels are looked up by name. Errors throw <see cref="CudaException"/>
/// with CUDA's result codes and the emulator's message (which names the kernel for launch
/// failures: out-of-bounds accesses, barrier divergence, bad launch configurations).
/// Selected explicitly (backend name <c>cuda-emu</c>), never as a silent fallback.
/// </summary>
public sealed unsafe class EmulatorDriver : ICudaDriver
{
    private const nint ContextHandle = 1;
    private readonly ConcurrentDictionary<nint, byte> _modules = new();
    private readonly ConcurrentDictionary<nint, byte> _streams = new();
    private readonly ConcurrentDictionary<nint, long?> _events = new();
    private long _nextHandle = 0x1000;

    private EmulatorDriver()
    {
    }

    /// <summary>
    /// Loads the emulator library from <c>DEEPKERNELS_EMULATOR_LIBRARY</c>, else next to the
    /// assembly, else from a development checkout's build/native/emu. Never throws.
    /// </summary>
    public static bool TryLoad(out EmulatorDriver? driver, out string reason)
    {
        driver = null;
        try
        {
            if (!EmulatorLibrary.TryLoad(out reason)) return false;
            int version = EmulatorNative.Version();
            if (version != 1)
            {
                reason = $"the kernel emulator library at {EmulatorLibrary.LoadedPath} has API version {version}, expected 1";
                return false;
            }
            driver = new EmulatorDriver();
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            reason = $"the kernel emulator library is unusable: {e.Message}";
            return false;
        }
    }

    /// <summary>The emulator library file in use.</summary>
    public static string? LibraryPath => EmulatorLibrary.LoadedPath;

    /// <inheritdoc />
    public string Name => "cuda-emu";

    /// <inheritdoc />
    public CudaProbeResult Probe()
    {
        try
        {
            var info = GetDeviceInfo(0);
            return new CudaProbeResult(CudaStatus.Ready, $"kernel emulator ({EmulatorLibrary.LoadedPath}, {KernelNames.Count} kernels)", 0, [info]);
        }
        catch (CudaException e)
        {
            return new CudaProbeResult(CudaStatus.KernelsNotBuilt, e.Message, 0, []);
        }
    }

    /// <inheritdoc />
    public int DeviceCount => 1;

    /// <summary>The kernels compiled into the emulator library (production and emulator-only test kernels).</summary>
    public IReadOnlyList<string> KernelNames
    {
        get
        {
            int n = EmulatorNative.KernelCount();
            var names = new List<string>(n);
            for (int i = 0; i < n; i++) names.Add(Marshal.PtrToStringUTF8(EmulatorNative.KernelName(i)) ?? "");
            return names;
        }
    }

    /// <inheritdoc />
    public CudaDeviceInfo GetDeviceInfo(int ordinal)
    {
        CheckOrdinal(ordinal);
        EmulatorNative.DeviceProperties p;
        EmulatorNative.Check(EmulatorNative.GetDeviceProperties(&p), "cuDeviceGetAttribute");
        string name = Marshal.PtrToStringUTF8((nint)p.Name) ?? "emulator";
        return new CudaDeviceInfo(0, name, p.CcMajor, p.CcMinor, p.MultiprocessorCount, (long)p.TotalMemory,
            p.MaxSharedPerBlockOptin, p.L2Bytes, 0, 0, 0);
    }

    /// <inheritdoc />
    public nint RetainPrimaryContext(int ordinal)
    {
        CheckOrdinal(ordinal);
        return ContextHandle;
    }

    /// <inheritdoc />
    public void ReleasePrimaryContext(int ordinal) => CheckOrdinal(ordinal);

    /// <inheritdoc />
    public void SetCurrentContext(nint context)
    {
        if (context != ContextHandle && context != 0) throw Error("cuCtxSetCurrent", 400, $"0x{context:x} is not the emulator's context");
    }

    /// <inheritdoc />
    public nint LoadModule(ReadOnlySpan<byte> image)
    {
        // The image (a fatbin for the real driver) is not needed: the kernels are compiled into
        // the emulator library. Kernels are still looked up by name, as with cuModuleGetFunction.
        nint handle = NewHandle();
        _modules[handle] = 0;
        return handle;
    }

    /// <inheritdoc />
    public void UnloadModule(nint module)
    {
        if (!_modules.TryRemove(module, out _)) throw Error("cuModuleUnload", 400, $"0x{module:x} is not a loaded module");
    }

    /// <inheritdoc />
    public nint GetFunction(nint module, string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_modules.ContainsKey(module)) throw Error("cuModuleGetFunction", 400, $"0x{module:x} is not a loaded module");
        nint function;
        EmulatorNative.Check(EmulatorNative.GetFunction(name, &function), "cuModuleGetFunction");
        return function;
    }

    /// <summary>The parameters of a kernel as compiled into the emulator (name, C type, size in bytes).</summary>
    public IReadOnlyList<(string Name, string Type, int Size)> GetParameters(nint function)
    {
        int count;
        EmulatorNative.Check(EmulatorNative.FunctionParamCount(function, &count), "cuFuncGetParamInfo");
        var list = new List<(string, string, int)>(count);
        for (int i = 0; i < count; i++)
        {
            nint name, type;
            ulong size;
            EmulatorNative.Check(EmulatorNative.FunctionParam(function, i, &name, &type, &size), "cuFuncGetParamInfo");
            list.Add((Marshal.PtrToStringUTF8(name) ?? "", Marshal.PtrToStringUTF8(type) ?? "", (int)size));
        }
        return list;
    }

    /// <inheritdoc />
    public int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute)
    {
        int value;
        EmulatorNative.Check(EmulatorNative.FuncGetAttribute(function, (int)attribute, &value), "cuFuncGetAttribute");
        return value;
    }

    /// <inheritdoc />
    public void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value) =>
        EmulatorNative.Check(EmulatorNative.FuncSetAttribute(function, (int)attribute, value), "cuFuncSetAttribute");

    /// <inheritdoc />
    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes)
    {
        if (blockSize <= 0 || blockSize > 1024) throw Error("cuOccupancyMaxActiveBlocksPerMultiprocessor", 1, $"block size {blockSize} is not in 1..1024");
        // The occupancy calculator over the emulated device's arch table (sm_90 when its CC is
        // not in the table) with what the emulator knows of the kernel: registers and static
        // shared memory read as 0 there, so warps, blocks and dynamic shared memory decide.
        int registers = Math.Clamp(GetFunctionAttribute(function, CudaFunctionAttribute.NumRegisters), 0, 255);
        int staticShared = Math.Max(0, GetFunctionAttribute(function, CudaFunctionAttribute.SharedSizeBytes));
        var arch = Diagnostics.Profiling.ArchLimits.Find($"sm_{GetDeviceInfo(0).ComputeCapability}") ?? Diagnostics.Profiling.ArchLimits.Find("sm_90")!;
        return Diagnostics.Profiling.Occupancy.Compute(arch, blockSize, registers, staticShared, (long)dynamicSharedBytes).BlocksPerSm;
    }

    /// <inheritdoc />
    public ulong Allocate(nuint bytes)
    {
        ulong pointer;
        EmulatorNative.Check(EmulatorNative.Malloc(bytes, &pointer), "cuMemAlloc");
        return pointer;
    }

    /// <inheritdoc />
    public void Free(ulong pointer) => EmulatorNative.Check(EmulatorNative.Free(pointer), "cuMemFree");

    /// <inheritdoc />
    public ulong AllocateAsync(nuint bytes, nint stream)
    {
        CheckStream(stream, "cuMemAllocFromPoolAsync");
        ulong pointer;
        EmulatorNative.Check(EmulatorNative.Malloc(bytes, &pointer), "cuMemAllocFromPoolAsync");
        return pointer;
    }

    /// <inheritdoc />
    public void FreeAsync(ulong pointer, nint stream)
    {
        CheckStream(stream, "cuMemFreeAsync");
        EmulatorNative.Check(EmulatorNative.Free(pointer), "cuMemFreeAsync");
    }

    /// <inheritdoc />
    public nint AllocateHost(nuint bytes)
    {
        nint pointer;
        EmulatorNative.Check(EmulatorNative.MallocHost(bytes, &pointer), "cuMemAllocHost");
        return pointer;
    }

    /// <inheritdoc />
    public void FreeHost(nint pointer) => EmulatorNative.Check(EmulatorNative.FreeHost(pointer), "cuMemFreeHost");

    /// <inheritdoc />
    public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream)
    {
        CheckStream(stream, "cuMemcpyHtoDAsync");
        EmulatorNative.Check(EmulatorNative.Memcpy(destination, (ulong)source, bytes, EmulatorNative.CopyHostToDevice), "cuMemcpyHtoDAsync");
    }

    /// <inheritdoc />
    public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream)
    {
        CheckStream(stream, "cuMemcpyDtoHAsync");
        EmulatorNative.Check(EmulatorNative.Memcpy((ulong)destination, source, bytes, EmulatorNative.CopyDeviceToHost), "cuMemcpyDtoHAsync");
    }

    /// <inheritdoc />
    public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream)
    {
        CheckStream(stream, "cuMemcpyDtoDAsync");
        EmulatorNative.Check(EmulatorNative.Memcpy(destination, source, bytes, EmulatorNative.CopyDeviceToDevice), "cuMemcpyDtoDAsync");
    }

    /// <inheritdoc />
    public void Memset(ulong destination, byte value, nuint bytes, nint stream)
    {
        CheckStream(stream, "cuMemsetD8Async");
        EmulatorNative.Check(EmulatorNative.Memset(destination, value, bytes), "cuMemsetD8Async");
    }

    /// <inheritdoc />
    public nint CreateStream()
    {
        nint handle = NewHandle();
        _streams[handle] = 0;
        return handle;
    }

    /// <inheritdoc />
    public void DestroyStream(nint stream)
    {
        if (!_streams.TryRemove(stream, out _)) throw Error("cuStreamDestroy", 400, $"0x{stream:x} is not a stream");
    }

    /// <inheritdoc />
    public void SynchronizeStream(nint stream) => CheckStream(stream, "cuStreamSynchronize");

    /// <inheritdoc />
    public nint CreateEvent()
    {
        nint handle = NewHandle();
        _events[handle] = null;
        return handle;
    }

    /// <inheritdoc />
    public void DestroyEvent(nint evt)
    {
        if (!_events.TryRemove(evt, out _)) throw Error("cuEventDestroy", 400, $"0x{evt:x} is not an event");
    }

    /// <inheritdoc />
    public void RecordEvent(nint evt, nint stream)
    {
        CheckStream(stream, "cuEventRecord");
        if (!_events.ContainsKey(evt)) throw Error("cuEventRecord", 400, $"0x{evt:x} is not an event");
        _events[evt] = Stopwatch.GetTimestamp();
    }

    /// <inheritdoc />
    public void SynchronizeEvent(nint evt)
    {
        if (!_events.ContainsKey(evt)) throw Error("cuEventSynchronize", 400, $"0x{evt:x} is not an event");
    }

    /// <inheritdoc />
    public float ElapsedMilliseconds(nint start, nint end)
    {
        if (!_events.TryGetValue(start, out long? a) || !_events.TryGetValue(end, out long? b))
            throw Error("cuEventElapsedTime", 400, "not an event");
        if (a is null || b is null) throw Error("cuEventElapsedTime", 600, "an event has not been recorded");
        return (float)((b.Value - a.Value) * 1000.0 / Stopwatch.Frequency);
    }

    /// <inheritdoc />
    public void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster) =>
        Launch(function, grid, block, dynamicSharedBytes, stream, arguments, null, -1, cluster);

    /// <summary>
    /// Launches like <see cref="ICudaDriver.LaunchKernel"/> and also checks the argument count and each
    /// argument's size (bytes) against the kernel's compiled signature before running it.
    /// </summary>
    public void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, ReadOnlySpan<ulong> argumentSizes)
    {
        fixed (ulong* sizes = argumentSizes)
            Launch(function, grid, block, dynamicSharedBytes, stream, arguments, sizes, argumentSizes.Length, new Dim3(1));
    }

    private void Launch(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, ulong* sizes, int count, Dim3 cluster)
    {
        CheckStream(stream, "cuLaunchKernel");
        if (cluster.Volume != 1) throw Error("cuLaunchKernelEx", 801, $"thread block clusters {cluster} are not emulated");
        EmulatorNative.Check(EmulatorNative.Launch(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, dynamicSharedBytes, arguments, sizes, count),
            "cuLaunchKernel");
    }

    /// <summary>
    /// Encodes a tiled TMA tensor map (what cuTensorMapEncodeTiled does on the real driver) for the
    /// emulator's TMA twins: 128 bytes to pass by value to a <c>const __grid_constant__ CUtensorMap</c>
    /// kernel parameter. <paramref name="dims"/> are in elements, innermost first;
    /// <paramref name="strides"/> are in bytes for dims 1..rank-1 (multiples of 16);
    /// <paramref name="box"/> is the tile loaded per copy (1..256 per dim, inner extent a multiple of
    /// 16 bytes); <paramref name="swizzleBytes"/> is 0, 32, 64 or 128.
    /// </summary>
    public byte[] EncodeTensorMap(int elementBytes, ulong global, ReadOnlySpan<ulong> dims, ReadOnlySpan<ulong> strides, ReadOnlySpan<uint> box, int swizzleBytes)
    {
        if (dims.Length is < 1 or > 5) throw new ArgumentException($"Expected 1 to 5 dims, got {dims.Length}.", nameof(dims));
        if (strides.Length != dims.Length - 1) throw new ArgumentException($"Expected {dims.Length - 1} strides, got {strides.Length}.", nameof(strides));
        if (box.Length != dims.Length) throw new ArgumentException($"Expected {dims.Length} box extents, got {box.Length}.", nameof(box));
        var map = new byte[128];
        fixed (byte* m = map)
        fixed (ulong* d = dims)
        fixed (ulong* s = strides)
        fixed (uint* b = box)
        {
            ulong dummy = 0;
            EmulatorNative.Check(EmulatorNative.TensorMapEncode(m, (uint)elementBytes, (uint)dims.Length, global, d, strides.Length > 0 ? s : &dummy, b, (uint)swizzleBytes),
                "cuTensorMapEncodeTiled");
        }
        return map;
    }

    /// <inheritdoc />
    public byte[] EncodeTensorMapTiled(int elementBytes, ulong global, ReadOnlySpan<ulong> dims, ReadOnlySpan<ulong> strides, ReadOnlySpan<uint> box, int swizzleBytes) =>
        EncodeTensorMap(elementBytes, global, dims, strides, box, swizzleBytes);

    /// <summary>Checks every allocation's guard bytes now (launches do this themselves).</summary>
    public void CheckMemory() => EmulatorNative.Check(EmulatorNative.CheckMemory(), "dkemu_check_memory");

    /// <summary>Counters of the emulator since the library loaded.</summary>
    public EmulatorStatistics Statistics
    {
        get
        {
            EmulatorNative.Stats s;
            EmulatorNative.GetStats(&s);
            return new EmulatorStatistics((long)s.Launches, (long)s.Ctas, (long)s.Threads, (long)s.FiberSwitches, (long)s.BytesInUse,
                (long)s.PeakBytes, (long)s.Allocations, (long)s.LiveAllocations);
        }
    }

    private nint NewHandle() => (nint)Interlocked.Increment(ref _nextHandle);

    private void CheckStream(nint stream, string call)
    {
        if (stream != 0 && !_streams.ContainsKey(stream)) throw Error(call, 400, $"0x{stream:x} is not a stream");
    }

    private static void CheckOrdinal(int ordinal)
    {
        if (ordinal != 0) throw Error("cuDeviceGet", 101, $"device {ordinal} does not exist (the emulator has one device, 0)");
    }

    private static CudaException Error(string call, int code, string message) =>
        new(call, code, code == 101 ? "CUDA_ERROR_INVALID_DEVICE" : EmulatorNative.ErrorName(code), message);
}

/// <summary>Counters of the kernel emulator.</summary>
/// <param name="Launches">Kernel launches run.</param>
/// <param name="Ctas">Thread blocks run.</param>
/// <param name="Threads">Emulated threads run.</param>
/// <param name="FiberSwitches">Fiber resumptions by the scheduler.</param>
/// <param name="BytesInUse">Device bytes allocated now.</param>
/// <param name="PeakBytes">Largest <paramref name="BytesInUse"/> seen.</param>
/// <param name="Allocations">Allocations made.</param>
/// <param name="LiveAllocations">Allocations not yet freed.</param>
public sealed record EmulatorStatistics(long Launches, long Ctas, long Threads, long FiberSwitches, long BytesInUse, long PeakBytes, long Allocations, long LiveAllocations);
