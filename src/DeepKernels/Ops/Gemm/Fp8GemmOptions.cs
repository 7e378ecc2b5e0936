namespace DeepKernels.Ops.Gemm;

/// <summary>Options of <see cref="Fp8Gemm"/>.</summary>
public readonly record struct Fp8GemmOptions
{
    /// <summary>
    /// Add the product to the existing values of an FP32 output (D += A * B^T) instead of
    /// overwriting them. Not allowed with a BFloat16 output.
    /// </summary>
    public bool Accumulate { get; init; }
}
