using DeepKernels.Backends.Cuda;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>The host-side split-K choice of the portable CUDA GEMM (no device needed).</summary>
public class GemmSplitKTests
{
    [TestCase(17, 56, 132, 8, 7)]    // decode, N = 2112, K = 7168 on an H100/H200
    [TestCase(2000, 56, 132, 1, 56)] // prefill fills the device: no split
    [TestCase(1, 3, 132, 1, 3)]      // too few K blocks to split
    [TestCase(1, 8, 132, 4, 2)]      // at least two K blocks per split
    [TestCase(1, 9, 132, 3, 3)]      // splits re-counted after rounding the blocks per split up
    [TestCase(1, 512, 132, 16, 32)]  // capped at 16 splits
    public void ChoosesSplits(long tiles, int kBlocks, int sms, int splits, int perSplit)
    {
        var (s, p) = CudaBackend.GemmSplitK(tiles, kBlocks, sms);
        Assert.That((s, p), Is.EqualTo((splits, perSplit)));
        Assert.That((long)s * p, Is.GreaterThanOrEqualTo(kBlocks), "every K block is covered");
        Assert.That((long)(s - 1) * p, Is.LessThan(kBlocks), "no empty split");
    }
}
