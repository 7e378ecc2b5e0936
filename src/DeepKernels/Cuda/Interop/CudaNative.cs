using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

/// <summary>
/// LibraryImport bindings of the CUDA driver API, split by feature into partial files. Every
/// function returns a CUresult (0 = success); <see cref="CudaResult.Check"/> turns the rest into
/// <see cref="CudaException"/>. Entry points use the exported <c>_v2</c> names where cuda.h maps
/// the plain name to them. Handles (CUcontext, CUmodule, ...) are <see cref="nint"/>; device
/// pointers (CUdeviceptr) are <see cref="ulong"/>; CUdevice is <see cref="int"/>.
/// </summary>
internal static unsafe partial class CudaNative
{
    static CudaNative() => CudaLibrary.EnsureRegistered();

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuInit(uint flags);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuDriverGetVersion(int* driverVersion);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuGetErrorName(int error, byte** name);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuGetErrorString(int error, byte** description);
}
