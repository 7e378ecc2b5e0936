using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Emulation;

/// <summary>The C API of libdeepkernels_emu.so (native/emu/include/dkemu/api.h).</summary>
internal static unsafe partial class EmulatorNative
{
    /// <summary>dkemu_device_properties.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct DeviceProperties
    {
        public fixed byte Name[64];
        public int CcMajor;
        public int CcMinor;
        public int MultiprocessorCount;
        public int MaxSharedPerBlockOptin;
        public int L2Bytes;
        public int MaxThreadsPerBlock;
        public ulong TotalMemory;
    }

    /// <summary>dkemu_stats.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Stats
    {
        public ulong Launches;
        public ulong Ctas;
        public ulong Threads;
        public ulong FiberSwitches;
        public ulong BytesInUse;
        public ulong PeakBytes;
        public ulong Allocations;
        public ulong LiveAllocations;
    }

    internal const int CopyHostToDevice = 1, CopyDeviceToHost = 2, CopyDeviceToDevice = 3;

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_version")]
    internal static partial int Version();

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_last_error")]
    internal static partial nint LastError();

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_device_get_properties")]
    internal static partial int GetDeviceProperties(DeviceProperties* properties);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_kernel_count")]
    internal static partial int KernelCount();

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_kernel_name")]
    internal static partial nint KernelName(int index);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_get_function", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int GetFunction(string name, nint* function);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_function_param_count")]
    internal static partial int FunctionParamCount(nint function, int* count);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_function_param")]
    internal static partial int FunctionParam(nint function, int index, nint* name, nint* type, ulong* size);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_func_get_attribute")]
    internal static partial int FuncGetAttribute(nint function, int attribute, int* value);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_func_set_attribute")]
    internal static partial int FuncSetAttribute(nint function, int attribute, int value);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_launch")]
    internal static partial int Launch(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint dynamicSharedBytes, void** args, ulong* argSizes, int argCount);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_malloc")]
    internal static partial int Malloc(ulong bytes, ulong* pointer);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_free")]
    internal static partial int Free(ulong pointer);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_memcpy")]
    internal static partial int Memcpy(ulong destination, ulong source, ulong bytes, int kind);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_memset")]
    internal static partial int Memset(ulong destination, int value, ulong bytes);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_malloc_host")]
    internal static partial int MallocHost(ulong bytes, nint* pointer);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_free_host")]
    internal static partial int FreeHost(nint pointer);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_check_memory")]
    internal static partial int CheckMemory();

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_get_stats")]
    internal static partial void GetStats(Stats* stats);

    [LibraryImport(EmulatorLibrary.Name, EntryPoint = "dkemu_tensor_map_encode")]
    internal static partial int TensorMapEncode(byte* tensorMap, uint elementBytes, uint rank, ulong global, ulong* dims, ulong* strides, uint* box, uint swizzle);

    /// <summary>The CUresult name for the codes the emulator returns.</summary>
    internal static string ErrorName(int code) => code switch
    {
        0 => "CUDA_SUCCESS",
        1 => "CUDA_ERROR_INVALID_VALUE",
        2 => "CUDA_ERROR_OUT_OF_MEMORY",
        400 => "CUDA_ERROR_INVALID_HANDLE",
        500 => "CUDA_ERROR_NOT_FOUND",
        600 => "CUDA_ERROR_NOT_READY",
        700 => "CUDA_ERROR_ILLEGAL_ADDRESS",
        710 => "CUDA_ERROR_ASSERT",
        716 => "CUDA_ERROR_MISALIGNED_ADDRESS",
        719 => "CUDA_ERROR_LAUNCH_FAILED",
        801 => "CUDA_ERROR_NOT_SUPPORTED",
        _ => "CUDA_ERROR_UNKNOWN",
    };

    /// <summary>Throws <see cref="CudaException"/> for a non-zero result, with the emulator's message.</summary>
    internal static void Check(int code, string call)
    {
        if (code == 0) return;
        string message = Marshal.PtrToStringUTF8(LastError()) ?? "";
        throw new CudaException(call, code, ErrorName(code), message.Length > 0 ? message : "kernel emulator error");
    }
}
