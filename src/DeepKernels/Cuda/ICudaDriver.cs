namespace DeepKernels.Cuda;

/// <summary>
/// The CUDA driver operations the CUDA backend needs, in driver-API terms. Two implementations:
/// the real driver (libcuda through LibraryImport) and the kernel emulator (the same .cu
/// sources compiled for the CPU). Handles are opaque native values; device pointers are
/// <c>CUdeviceptr</c>-style 64-bit addresses. Every failure throws <see cref="CudaException"/>.
/// </summary>
public interface ICudaDriver
{
    /// <summary>"cuda" for the real driver, "cuda-emu" for the emulator.</summary>
    string Name { get; }

    /// <summary>Reports whether the driver is usable; never throws.</summary>
    CudaProbeResult Probe();

    /// <summary>Number of visible devices.</summary>
    int DeviceCount { get; }

    /// <summary>Device properties.</summary>
    CudaDeviceInfo GetDeviceInfo(int ordinal);

    /// <summary>Retains the device's primary context and makes it current on this thread.</summary>
    nint RetainPrimaryContext(int ordinal);

    /// <summary>Releases a primary context retained by <see cref="RetainPrimaryContext"/>.</summary>
    void ReleasePrimaryContext(int ordinal);

    /// <summary>Makes a context current on the calling thread.</summary>
    void SetCurrentContext(nint context);

    /// <summary>Loads a module from a fatbin/cubin/PTX image (cuModuleLoadData).</summary>
    nint LoadModule(ReadOnlySpan<byte> image);

    /// <summary>Unloads a module.</summary>
    void UnloadModule(nint module);

    /// <summary>Looks up an <c>extern "C"</c> kernel by name.</summary>
    nint GetFunction(nint module, string name);

    /// <summary>Reads a function attribute (cuFuncGetAttribute).</summary>
    int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute);

    /// <summary>Sets a function attribute (cuFuncSetAttribute), e.g. the dynamic shared memory opt-in.</summary>
    void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value);

    /// <summary>Blocks of <paramref name="blockSize"/> threads that fit on one SM.</summary>
    int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes);

    /// <summary>Allocates device memory (cuMemAlloc).</summary>
    ulong Allocate(nuint bytes);

    /// <summary>Frees device memory (cuMemFree).</summary>
    void Free(ulong pointer);

    /// <summary>Allocates from the device's stream-ordered pool (cuMemAllocFromPoolAsync).</summary>
    ulong AllocateAsync(nuint bytes, nint stream);

    /// <summary>Returns memory to the stream-ordered pool (cuMemFreeAsync).</summary>
    void FreeAsync(ulong pointer, nint stream);

    /// <summary>Allocates page-locked host memory (cuMemAllocHost).</summary>
    nint AllocateHost(nuint bytes);

    /// <summary>Frees page-locked host memory.</summary>
    void FreeHost(nint pointer);

    /// <summary>Copies host to device, ordered on <paramref name="stream"/> (0 = default stream).</summary>
    void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream);

    /// <summary>Copies device to host, ordered on <paramref name="stream"/>.</summary>
    void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream);

    /// <summary>Copies device to device, ordered on <paramref name="stream"/>.</summary>
    void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream);

    /// <summary>Sets bytes, ordered on <paramref name="stream"/>.</summary>
    void Memset(ulong destination, byte value, nuint bytes, nint stream);

    /// <summary>Creates a non-blocking stream.</summary>
    nint CreateStream();

    /// <summary>Destroys a stream.</summary>
    void DestroyStream(nint stream);

    /// <summary>Waits for all work on a stream.</summary>
    void SynchronizeStream(nint stream);

    /// <summary>Creates an event that can time (cuEventCreate with default flags).</summary>
    nint CreateEvent();

    /// <summary>Destroys an event.</summary>
    void DestroyEvent(nint evt);

    /// <summary>Records an event on a stream.</summary>
    void RecordEvent(nint evt, nint stream);

    /// <summary>Waits for an event.</summary>
    void SynchronizeEvent(nint evt);

    /// <summary>Milliseconds between two recorded events.</summary>
    float ElapsedMilliseconds(nint start, nint end);

    /// <summary>
    /// Launches a kernel (cuLaunchKernel; cuLaunchKernelEx when <paramref name="cluster"/> is not 1x1x1).
    /// <paramref name="arguments"/> holds one pointer per kernel parameter, as the driver API expects.
    /// </summary>
    unsafe void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster);

    /// <summary>
    /// Encodes a tiled TMA tensor map (cuTensorMapEncodeTiled): the 128 bytes to pass by value to a
    /// <c>const __grid_constant__ CUtensorMap</c> kernel parameter. <paramref name="dims"/> are in
    /// elements, innermost first; <paramref name="strides"/> in bytes for dims 1..rank-1 (multiples
    /// of 16); <paramref name="box"/> is the tile per copy; <paramref name="swizzleBytes"/> is 0,
    /// 32, 64 or 128. Out-of-bounds elements load as zeros. Drivers without TMA throw
    /// <see cref="NotSupportedException"/>.
    /// </summary>
    byte[] EncodeTensorMapTiled(int elementBytes, ulong global, ReadOnlySpan<ulong> dims, ReadOnlySpan<ulong> strides, ReadOnlySpan<uint> box, int swizzleBytes) =>
        throw new NotSupportedException($"{GetType().Name} cannot encode TMA tensor maps.");
}

/// <summary>The function attributes we read or set (values are CUfunction_attribute).</summary>
public enum CudaFunctionAttribute
{
    /// <summary>CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK.</summary>
    MaxThreadsPerBlock = 0,
    /// <summary>CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES (static shared memory).</summary>
    SharedSizeBytes = 1,
    /// <summary>CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES (stack/local memory per thread).</summary>
    LocalSizeBytes = 3,
    /// <summary>CU_FUNC_ATTRIBUTE_NUM_REGS.</summary>
    NumRegisters = 4,
    /// <summary>CU_FUNC_ATTRIBUTE_PTX_VERSION.</summary>
    PtxVersion = 5,
    /// <summary>CU_FUNC_ATTRIBUTE_BINARY_VERSION.</summary>
    BinaryVersion = 6,
    /// <summary>CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.</summary>
    MaxDynamicSharedSizeBytes = 8,
}
