using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

internal static unsafe partial class CudaNative
{
    /// <summary>CU_STREAM_NON_BLOCKING: no implicit synchronisation with the legacy default stream.</summary>
    internal const uint StreamNonBlocking = 1;

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuStreamCreate(nint* stream, uint flags);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuStreamDestroy_v2(nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuStreamSynchronize(nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuEventCreate(nint* evt, uint flags);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuEventDestroy_v2(nint evt);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuEventRecord(nint evt, nint stream);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuEventSynchronize(nint evt);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuEventElapsedTime(float* milliseconds, nint start, nint end);
}
