using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

internal static unsafe partial class CudaNative
{
    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuModuleLoadData(nint* module, void* image);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuModuleUnload(nint module);

    [LibraryImport(CudaLibrary.Name, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int cuModuleGetFunction(nint* function, nint module, string name);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuFuncGetAttribute(int* value, CudaFunctionAttribute attribute, nint function);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuFuncSetAttribute(nint function, CudaFunctionAttribute attribute, int value);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, nint function, int blockSize, nuint dynamicSharedBytes);
}
