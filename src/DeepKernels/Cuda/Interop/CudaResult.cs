using System.Runtime.InteropServices;

namespace DeepKernels.Cuda.Interop;

/// <summary>CUresult handling: non-zero results become <see cref="CudaException"/>.</summary>
internal static class CudaResult
{
    public const int Success = 0;
    public const int ErrorInvalidValue = 1;
    public const int ErrorOutOfMemory = 2;
    public const int ErrorNotInitialized = 3;
    public const int ErrorDeinitialized = 4;
    public const int ErrorNoDevice = 100;
    public const int ErrorInsufficientDriver = 35;
    public const int ErrorNotSupported = 801;

    // Names and strings of the common CUresults, used when the driver's own lookup is unavailable.
    private static readonly Dictionary<int, (string Name, string Text)> Known = new()
    {
        [0] = ("CUDA_SUCCESS", "no error"),
        [1] = ("CUDA_ERROR_INVALID_VALUE", "invalid argument"),
        [2] = ("CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
        [3] = ("CUDA_ERROR_NOT_INITIALIZED", "initialization error"),
        [4] = ("CUDA_ERROR_DEINITIALIZED", "driver shutting down"),
        [34] = ("CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"),
        [35] = ("CUDA_ERROR_INSUFFICIENT_DRIVER", "CUDA driver version is insufficient for CUDA runtime version"),
        [100] = ("CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"),
        [101] = ("CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"),
        [200] = ("CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"),
        [201] = ("CUDA_ERROR_INVALID_CONTEXT", "invalid device context"),
        [209] = ("CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"),
        [218] = ("CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"),
        [222] = ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."),
        [300] = ("CUDA_ERROR_INVALID_SOURCE", "device kernel image is invalid"),
        [400] = ("CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"),
        [500] = ("CUDA_ERROR_NOT_FOUND", "named symbol not found"),
        [600] = ("CUDA_ERROR_NOT_READY", "device not ready"),
        [700] = ("CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"),
        [701] = ("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"),
        [702] = ("CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated"),
        [719] = ("CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"),
        [801] = ("CUDA_ERROR_NOT_SUPPORTED", "operation not supported"),
        [999] = ("CUDA_ERROR_UNKNOWN", "unknown error"),
    };

    /// <summary>Throws <see cref="CudaException"/> for a non-zero <paramref name="result"/>.</summary>
    public static void Check(int result, string call)
    {
        if (result != Success) throw Exception(call, result);
    }

    /// <summary>The exception for <paramref name="call"/> returning <paramref name="result"/>, with the driver's name and text.</summary>
    public static CudaException Exception(string call, int result)
    {
        var (name, text) = Describe(result);
        return new CudaException(call, result, name, text);
    }

    /// <summary>cuGetErrorName/cuGetErrorString when the driver is loaded, else the built-in table.</summary>
    public static (string Name, string Text) Describe(int result)
    {
        string? name = null, text = null;
        if (CudaLibrary.TryLoadDefault(out _))
        {
            try
            {
                (name, text) = DescribeWithDriver(result);
            }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
            {
                // A very old or partial driver: use the table.
            }
        }
        (string Name, string Text) fallback = Known.TryGetValue(result, out var known) ? known : ($"CUDA_ERROR_{result}", "unrecognised CUresult");
        return (name ?? fallback.Name, text ?? fallback.Text);
    }

    /// <summary>Only the built-in table (used by tests and when no driver is loaded).</summary>
    public static (string Name, string Text)? DescribeFromTable(int result) =>
        Known.TryGetValue(result, out var known) ? known : null;

    internal static unsafe (string? Name, string? Text) DescribeWithDriver(int result)
    {
        byte* name = null, text = null;
        string? n = CudaNative.cuGetErrorName(result, &name) == Success && name != null ? Marshal.PtrToStringUTF8((nint)name) : null;
        string? t = CudaNative.cuGetErrorString(result, &text) == Success && text != null ? Marshal.PtrToStringUTF8((nint)text) : null;
        return (n, t);
    }
}
