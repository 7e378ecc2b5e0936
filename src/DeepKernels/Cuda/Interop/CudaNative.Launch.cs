using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

internal static unsafe partial class CudaNative
{
    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuLaunchKernel(
        nint function,
        uint gridX, uint gridY, uint gridZ,
        uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);

    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuLaunchKernelEx(CudaLaunchConfig* config, nint function, void** kernelParams, void** extra);

    /// <summary>cuTensorMapEncodeTiled (CUDA 12+); the enums are passed as their uint values.</summary>
    [LibraryImport(CudaLibrary.Name)]
    internal static partial int cuTensorMapEncodeTiled(
        byte* tensorMap, uint dataType, uint rank, nint globalAddress, ulong* globalDim, ulong* globalStrides,
        uint* boxDim, uint* elementStrides, uint interleave, uint swizzle, uint l2Promotion, uint oobFill);
}

/// <summary>CUlaunchConfig (cuda.h, CUDA 11.8+).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CudaLaunchConfig
{
    public uint GridDimX, GridDimY, GridDimZ;
    public uint BlockDimX, BlockDimY, BlockDimZ;
    public uint SharedMemBytes;
    public nint Stream;
    public CudaLaunchAttribute* Attributes;
    public uint AttributeCount;
}

/// <summary>CUlaunchAttribute: a 4-byte id padded to 8, then a 64-byte value union.</summary>
[StructLayout(LayoutKind.Explicit, Size = 72)]
internal struct CudaLaunchAttribute
{
    /// <summary>CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION.</summary>
    public const int ClusterDimension = 4;

    [FieldOffset(0)] public int Id;
    [FieldOffset(8)] public uint X;
    [FieldOffset(12)] public uint Y;
    [FieldOffset(16)] public uint Z;
}
