using DeepKernels.Ops.Matmul;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IBatchedMatmulBackend
{
    unsafe void IBatchedMatmulBackend.BatchedMatmul(in BatchedMatmulArgs args)
    {
        var a = args;
        float* pa = (float*)a.A.Data, pc = (float*)a.C.Data;
        nint pb = a.B.Data;
        bool bf16 = a.B.DType == DType.BFloat16;
        long saZ = a.A.Stride(0), saM = a.A.Stride(1), saK = a.A.Stride(2);
        long sbZ = a.B.Stride(0), sbN = a.B.Stride(1), sbK = a.B.Stride(2);
        long scZ = a.C.Stride(0), scM = a.C.Stride(1), scN = a.C.Stride(2);
        int m = a.M, n = a.N, k = a.K;
        bool accumulate = a.Accumulate;
        // One task per (batch, row); each C element sums over k in ascending order with one FMA
        // per term, as the CUDA kernel does.
        void Row(int task)
        {
            int z = task / m, i = task % m;
            float* ar = pa + z * saZ + i * saM;
            for (int j = 0; j < n; j++)
            {
                long bRow = z * sbZ + j * sbN;
                float acc = 0f;
                if (bf16)
                {
                    ushort* br = (ushort*)pb + bRow;
                    for (int x = 0; x < k; x++) acc = MathF.FusedMultiplyAdd(ar[x * saK], BitConverter.Int32BitsToSingle(br[x * sbK] << 16), acc);
                }
                else
                {
                    float* br = (float*)pb + bRow;
                    for (int x = 0; x < k; x++) acc = MathF.FusedMultiplyAdd(ar[x * saK], br[x * sbK], acc);
                }
                float* dst = pc + z * scZ + i * scM + j * scN;
                *dst = accumulate ? *dst + acc : acc;
            }
        }
        int tasks = a.Batch * m;
        if ((long)tasks * n * k < 1 << 18) for (int t = 0; t < tasks; t++) Row(t);
        else Parallel.For(0, tasks, Row);
    }
}
