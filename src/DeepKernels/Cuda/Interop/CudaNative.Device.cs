using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

internal static unsafe partial class CudaNative
{
    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDeviceGetCount(int* count);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDeviceGet(int* device, int ordinal);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDeviceGetName(byte* name, int length, int device);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDeviceGetAttribute(int* value, CudaDeviceAttribute attribute, int device);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDeviceTotalMem_v2(nuint* bytes, int device);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDevicePrimaryCtxRetain(nint* context, int device);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDevicePrimaryCtxRelease_v2(int device);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuCtxSetCurrent(nint context);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuCtxGetCurrent(nint* context);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuCtxGetDevice(int* device);
}

/// <summary>CUdevice_attribute values we read.</summary>
internal enum CudaDeviceAttribute
{
    MaxThreadsPerBlock = 1,
    MaxSharedMemoryPerBlock = 8,
    ClockRate = 13,
    MultiprocessorCount = 16,
    MemoryClockRate = 36,
    GlobalMemoryBusWidth = 37,
    L2CacheSize = 38,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerBlockOptin = 97,
    MemoryPoolsSupported = 115,
}
