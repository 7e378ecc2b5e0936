using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IFp8GemmBackend
{
    unsafe void IFp8GemmBackend.Fp8Gemm(in Fp8GemmArgs args)
    {
        // UE8M0 scales are widened to FP32 once; FP32 scales are read in place.
        float[]? sa = args.AScales.DType == DType.UE8M0 ? ScaleReader.ToSingles(args.AScales, "aScales") : null;
        float[]? sb = args.BScales.DType == DType.UE8M0 ? ScaleReader.ToSingles(args.BScales, "bScales") : null;
        int kBlocks = Fp8Gemm.BlockCount(args.K);
        fixed (float* psa = sa)
        fixed (float* psb = sb)
        {
            var problem = new Fp8GemmProblem
            {
                A = (byte*)args.A.Data, Lda = args.K,
                ScaleA = psa != null ? psa : (float*)args.AScales.Data, ScaleAStride = kBlocks,
                B = (byte*)args.B.Data, Ldb = args.K,
                ScaleB = psb != null ? psb : (float*)args.BScales.Data, ScaleBStride = kBlocks,
                D = (void*)args.D.Data, Ldd = args.N,
                OutputBFloat16 = args.D.DType == DType.BFloat16, Accumulate = args.Options.Accumulate,
                M = args.M, N = args.N, K = args.K,
            };
            Fp8GemmKernel.Run(problem, 0, args.M, ParallelOptions);
        }
    }
}
