using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Gemm;

/// <summary>
/// FP8 block-scaled GEMM, D[M, N] = A[M, K] * B[N, K]^T ("NT": both operands K-contiguous).
/// A is E4M3 with one scale per 1x128 group along K (sa[M, ceil(K/128)], as produced by
/// <see cref="ActivationQuantization"/>); B is E4M3 with one scale per 128x128 block
/// (sb[ceil(N/128), ceil(K/128)], a checkpoint's <c>weight_scale_inv</c>). Accumulation is FP32:
/// the partial sum of each 128-wide K block is multiplied by sa[m, kb] * sb[n / 128, kb] and
/// added to an FP32 accumulator (DeepSeek-V3's promotion). K need not be a multiple of 128 (the
/// last block is partial); N and M are arbitrary. The output is FP32 or BFloat16 (rounded to
/// nearest even), optionally accumulated into an existing FP32 D.
/// </summary>
public static class Fp8Gemm
{
    /// <summary>K elements per scale block (and rows of B per scale block).</summary>
    public const int BlockSize = 128;

    /// <summary>Floating-point operations of one GEMM: 2 * M * N * K.</summary>
    public static double Flops(long m, long n, long k) => 2.0 * m * n * k;

    /// <summary>
    /// Bytes moved by one GEMM by the project's anchor: M*K + K*N (FP8 operands) + 2*M*N
    /// (a BF16 output); scales are ignored.
    /// </summary>
    public static double Bytes(long m, long n, long k) => (double)m * k + (double)k * n + 2.0 * m * n;

    /// <summary>
    /// Runs the GEMM on host spans with FP32 output, using every core (see <see cref="CpuBackend.Default"/>).
    /// Scales must be finite and positive; UE8M0 scales can be widened with <see cref="UE8M0.ToSingle"/>.
    /// </summary>
    public static void Run(ReadOnlySpan<Float8E4M3> a, ReadOnlySpan<float> aScales, ReadOnlySpan<Float8E4M3> b, ReadOnlySpan<float> bScales,
        Span<float> d, int m, int n, int k, Fp8GemmOptions options = default) =>
        RunSpans(a, aScales, b, bScales, MemoryMarshal.AsBytes(d), false, m, n, k, options);

    /// <summary>As the FP32 overload, writing BFloat16 (round to nearest even); accumulation is not allowed.</summary>
    public static void Run(ReadOnlySpan<Float8E4M3> a, ReadOnlySpan<float> aScales, ReadOnlySpan<Float8E4M3> b, ReadOnlySpan<float> bScales,
        Span<BFloat16> d, int m, int n, int k, Fp8GemmOptions options = default) =>
        RunSpans(a, aScales, b, bScales, MemoryMarshal.AsBytes(d), true, m, n, k, options);

    private static unsafe void RunSpans(ReadOnlySpan<Float8E4M3> a, ReadOnlySpan<float> aScales, ReadOnlySpan<Float8E4M3> b, ReadOnlySpan<float> bScales,
        Span<byte> d, bool bf16, int m, int n, int k, Fp8GemmOptions options)
    {
        Guard.Positive(m, nameof(m));
        Guard.Positive(n, nameof(n));
        Guard.Positive(k, nameof(k));
        int kb = BlockCount(k);
        Guard.Length(a.Length, (long)m * k, nameof(a));
        Guard.Length(b.Length, (long)n * k, nameof(b));
        Guard.Length(aScales.Length, (long)m * kb, nameof(aScales));
        Guard.Length(bScales.Length, (long)BlockCount(n) * kb, nameof(bScales));
        Guard.Length(d.Length, (long)m * n * (bf16 ? 2 : 4), nameof(d) + " bytes");
        Guard.AllFinitePositive(aScales, nameof(aScales));
        Guard.AllFinitePositive(bScales, nameof(bScales));
        if (options.Accumulate && bf16)
            throw new ArgumentException("Accumulation (D += A * B^T) needs a Float32 output, got BFloat16.", nameof(options));
        fixed (Float8E4M3* pa = a)
        fixed (Float8E4M3* pb = b)
        fixed (float* psa = aScales)
        fixed (float* psb = bScales)
        fixed (byte* pd = d)
        {
            var problem = new Fp8GemmProblem
            {
                A = (byte*)pa, Lda = k, ScaleA = psa, ScaleAStride = kb,
                B = (byte*)pb, Ldb = k, ScaleB = psb, ScaleBStride = kb,
                D = pd, Ldd = n, OutputBFloat16 = bf16, Accumulate = options.Accumulate,
                M = m, N = n, K = k,
            };
            Fp8GemmKernel.Run(problem, 0, m, CpuBackend.Default.ParallelOptions);
        }
    }

    /// <summary>
    /// Runs the GEMM on <paramref name="backend"/>: <paramref name="a"/> Float8E4M3 [M, K],
    /// <paramref name="aScales"/> Float32 or UE8M0 [M, ceil(K/128)], <paramref name="b"/>
    /// Float8E4M3 [N, K], <paramref name="bScales"/> Float32 or UE8M0 [ceil(N/128), ceil(K/128)],
    /// <paramref name="d"/> Float32 or BFloat16 [M, N]. All tensors contiguous and in the backend's
    /// memory; scales finite and positive (checked here for host tensors).
    /// </summary>
    public static void Run(Backend backend, TensorView a, TensorView aScales, TensorView b, TensorView bScales, TensorView d, Fp8GemmOptions options = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(a, 2, nameof(a));
        Guard.Rank(b, 2, nameof(b));
        Guard.DType(a, DType.Float8E4M3, nameof(a));
        Guard.DType(b, DType.Float8E4M3, nameof(b));
        long m = a.Dim(0), k = a.Dim(1), n = b.Dim(0);
        Guard.Positive(m, "M");
        Guard.Positive(k, "K");
        Guard.Positive(n, "N");
        if (b.Dim(1) != k)
            throw new ArgumentException($"Expected {nameof(b)} of shape [N, K] with K = {k} (from a {a}), got {b}: mismatched K.", nameof(b));
        if (m > int.MaxValue || n > int.MaxValue || k > int.MaxValue)
            throw new ArgumentException($"Expected M, N, K below 2^31, got {m}, {n}, {k}.", nameof(a));
        Guard.DType(aScales, DType.Float32, DType.UE8M0, nameof(aScales));
        Guard.Shape(aScales, nameof(aScales), m, BlockCount(k));
        Guard.DType(bScales, DType.Float32, DType.UE8M0, nameof(bScales));
        Guard.Shape(bScales, nameof(bScales), BlockCount(n), BlockCount(k));
        Guard.DType(d, DType.Float32, DType.BFloat16, nameof(d));
        Guard.Shape(d, nameof(d), m, n);
        if (options.Accumulate && d.DType != DType.Float32)
            throw new ArgumentException($"Accumulation (D += A * B^T) needs a Float32 {nameof(d)}, got {d}.", nameof(d));
        WeightQuantization.CheckPlacement(backend, (a, nameof(a)), (aScales, nameof(aScales)), (b, nameof(b)), (bScales, nameof(bScales)), (d, nameof(d)));
        if (aScales.Location == MemoryLocation.Host) ScaleReader.Validate(aScales, nameof(aScales));
        if (bScales.Location == MemoryLocation.Host) ScaleReader.Validate(bScales, nameof(bScales));
        var impl = Guard.Implementation<IFp8GemmBackend>(backend, "FP8 GEMM");
        impl.Fp8Gemm(new Fp8GemmArgs(a, aScales, b, bScales, d, (int)m, (int)n, (int)k, options));
    }

    /// <summary>Scale blocks along a dimension of <paramref name="size"/> elements.</summary>
    public static int BlockCount(long size) => checked((int)((size + BlockSize - 1) / BlockSize));
}

/// <summary>Validated arguments of <see cref="Fp8Gemm.Run(Backend, TensorView, TensorView, TensorView, TensorView, TensorView, Fp8GemmOptions)"/>.</summary>
internal readonly record struct Fp8GemmArgs(TensorView A, TensorView AScales, TensorView B, TensorView BScales, TensorView D, int M, int N, int K, Fp8GemmOptions Options);

/// <summary>A backend's implementation of the FP8 block-scaled GEMM.</summary>
internal interface IFp8GemmBackend
{
    void Fp8Gemm(in Fp8GemmArgs args);
}
