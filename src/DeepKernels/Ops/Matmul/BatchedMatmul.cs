using DeepKernels.Backends;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Matmul;

/// <summary>
/// C[z] = A[z] B[z]^T over a batch of small FP32 matmuls with FP32 accumulation: A Float32
/// [Z, M, K], B Float32 or BFloat16 [Z, N, K], C Float32 [Z, M, N]. Every operand is addressed
/// by its own element strides, so a transposed B, a column slice of a wider tensor or one batch
/// entry per attention head need no copies. The model graph uses it for MLA weight absorption
/// (q_nope x W_UK, latent x W_UV), the BF16 router gate and the BF16 lm_head. Sums run over k in
/// ascending order with one fused multiply-add per term on every backend.
/// </summary>
public static class BatchedMatmul
{
    /// <summary>
    /// Runs C = A B^T (or C += A B^T with <paramref name="accumulate"/>) on <paramref name="backend"/>.
    /// Rank-2 operands are a batch of one. Strides must be non-negative; C must not overlap A or B.
    /// </summary>
    public static void Run(Backend backend, TensorView a, TensorView b, TensorView c, bool accumulate = false)
    {
        ArgumentNullException.ThrowIfNull(backend);
        a = AsBatch(a, nameof(a));
        b = AsBatch(b, nameof(b));
        c = AsBatch(c, nameof(c));
        Guard.DType(a, DType.Float32, nameof(a));
        Guard.DType(b, DType.Float32, DType.BFloat16, nameof(b));
        Guard.DType(c, DType.Float32, nameof(c));
        long z = a.Dim(0), m = a.Dim(1), k = a.Dim(2), n = b.Dim(1);
        if (b.Dim(0) != z || b.Dim(2) != k)
            throw new ArgumentException($"Expected {nameof(b)} of shape [Z, N, K] with Z = {z}, K = {k} (from a {a}), got {b}.", nameof(b));
        Guard.Shape(c, nameof(c), z, m, n);
        if (z > ushort.MaxValue || m > int.MaxValue || n > int.MaxValue || k > int.MaxValue)
            throw new ArgumentException($"Expected Z <= {ushort.MaxValue} and M, N, K below 2^31, got Z = {z}, M = {m}, N = {n}, K = {k}.", nameof(a));
        foreach (var (view, name) in new[] { (a, nameof(a)), (b, nameof(b)), (c, nameof(c)) })
        {
            for (int d = 0; d < 3; d++)
            {
                if (view.Stride(d) < 0)
                    throw new ArgumentException($"Expected non-negative strides for {name}, got {view} with stride {view.Stride(d)} in dimension {d}.", name);
            }
            Guard.OnBackend(view, backend, name);
        }
        if (c.Data != 0 && (c.Data == a.Data || c.Data == b.Data))
            throw new ArgumentException($"Expected {nameof(c)} not to alias {nameof(a)} or {nameof(b)} (the product is not computed in place), got {c} at the same address.", nameof(c));
        if (z == 0 || m == 0 || n == 0) return;
        var impl = Guard.Implementation<IBatchedMatmulBackend>(backend, "batched matmul");
        impl.BatchedMatmul(new BatchedMatmulArgs(a, b, c, (int)z, (int)m, (int)n, (int)k, accumulate));
    }

    /// <summary>FLOPs of a batched matmul.</summary>
    public static double Flops(long z, long m, long n, long k) => 2.0 * z * m * n * k;

    private static TensorView AsBatch(TensorView view, string name)
    {
        if (view.Rank == 3) return view;
        if (view.Rank != 2) throw new ArgumentException($"Expected {name} of rank 2 or 3, got {view}.", name);
        return new TensorView(view.Data, view.DType, view.Location, [1, view.Dim(0), view.Dim(1)], [0, view.Stride(0), view.Stride(1)]);
    }
}

/// <summary>Validated arguments of <see cref="BatchedMatmul"/> (all views rank 3).</summary>
internal readonly record struct BatchedMatmulArgs(TensorView A, TensorView B, TensorView C, int Batch, int M, int N, int K, bool Accumulate);

/// <summary>A backend's implementation of the batched matmul.</summary>
internal interface IBatchedMatmulBackend
{
    void BatchedMatmul(in BatchedMatmulArgs args);
}
