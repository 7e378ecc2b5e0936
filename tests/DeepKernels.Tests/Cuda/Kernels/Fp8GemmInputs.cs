using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>Random FP8 GEMM inputs (codes, scales, an initial D) shared by the CUDA GEMM kernel tests.</summary>
internal sealed record Fp8GemmInputs(int M, int N, int K, byte[] A, float[] Sa, byte[] B, float[] Sb, float[] D0)
{
    public static Fp8GemmInputs Make(int m, int n, int k, int seed)
    {
        var rng = new Random(seed);
        int kb = Fp8Gemm.BlockCount(k), nb = Fp8Gemm.BlockCount(n);
        return new Fp8GemmInputs(m, n, k, Fp8Codes(m * k, rng), Scales(m * kb, rng), Fp8Codes(n * k, rng), Scales(nb * kb, rng), Gaussian(m * n, rng));
    }

    /// <summary>
    /// Uploads the inputs to <paramref name="backend"/>, runs the GEMM (through <c>Fp8Gemm.Run</c>,
    /// or <paramref name="kernel"/> when given) and returns D as floats.
    /// </summary>
    public float[] Run(Backend backend, DType output, bool accumulate, DType scaleType = DType.Float32, Action<Fp8GemmArgs>? kernel = null)
    {
        int kb = Fp8Gemm.BlockCount(K), nb = Fp8Gemm.BlockCount(N);
        using var a = Put(backend, A, DType.Float8E4M3, M, K);
        using var b = Put(backend, B, DType.Float8E4M3, N, K);
        using var sa = scaleType == DType.Float32
            ? Put(backend, Sa, DType.Float32, M, kb)
            : Put(backend, Sa.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, M, kb);
        using var sb = scaleType == DType.Float32
            ? Put(backend, Sb, DType.Float32, nb, kb)
            : Put(backend, Sb.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, nb, kb);
        using var d = output == DType.Float32 ? Put(backend, D0, DType.Float32, M, N) : backend.Allocate(DType.BFloat16, M, N);
        var options = new Fp8GemmOptions { Accumulate = accumulate };
        if (kernel is null) Fp8Gemm.Run(backend, a, sa, b, sb, d, options);
        else kernel(new Fp8GemmArgs(a.View, sa.View, b.View, sb.View, d.View, M, N, K, options));
        backend.Synchronize();
        return ReadFloats(backend, d);
    }
}
