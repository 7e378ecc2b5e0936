using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

internal static unsafe partial class CudaNative
{
    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemAlloc_v2(ulong* pointer, nuint bytes);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemFree_v2(ulong pointer);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDeviceGetDefaultMemPool(nint* pool, int device);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemPoolSetAttribute(nint pool, int attribute, void* value);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemAllocFromPoolAsync(ulong* pointer, nuint bytes, nint pool, nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemFreeAsync(ulong pointer, nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemAllocHost_v2(void** pointer, nuint bytes);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemFreeHost(void* pointer);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemcpyHtoDAsync_v2(ulong destination, void* source, nuint bytes, nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemcpyDtoHAsync_v2(void* destination, ulong source, nuint bytes, nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemcpyDtoDAsync_v2(ulong destination, ulong source, nuint bytes, nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuMemsetD8Async(ulong destination, byte value, nuint count, nint stream);

    /// <summary>CU_MEMPOOL_ATTR_RELEASE_THRESHOLD (cuuint64_t).</summary>
    internal const int MemPoolAttributeReleaseThreshold = 4;
}
