namespace DeepKernels.Cuda;

/// <summary>A CUDA driver call returned an error.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates an exception for <paramref name="call"/> returning <paramref name="code"/>.</summary>
    public CudaException(string call, int code, string errorName, string errorString)
        : base($"{call} failed: {errorName} ({code}): {errorString}")
    {
        Call = call;
        Code = code;
        ErrorName = errorName;
        ErrorString = errorString;
    }

    /// <summary>The driver function, e.g. "cuMemAlloc".</summary>
    public string Call { get; }

    /// <summary>The CUresult value.</summary>
    public int Code { get; }

    /// <summary>cuGetErrorName, e.g. "CUDA_ERROR_OUT_OF_MEMORY".</summary>
    public string ErrorName { get; }

    /// <summary>cuGetErrorString.</summary>
    public string ErrorString { get; }
}
