using DeepKernels.Cuda;

namespace DeepKernels.Tests.Emulation;

/// <summary>Warp shuffles, votes, reductions and predicate barriers against their CUDA definitions.</summary>
public class WarpPrimitiveTests : EmulatorTestBase
{
    [Test]
    public void WarpPrimitivesFollowTheCudaDefinitions()
    {
        var rng = new Random(3);
        var input = new int[64];
        for (int i = 0; i < 64; i++) input[i] = rng.Next(1, 1000);
        input[40] = 42; // only in the second warp
        ulong din = Upload<int>(input), dout = Alloc(64 * 12 * 4);
        Launch("dk_test_warp_ops", new Dim3(1), new Dim3(64), new KernelArgs().Ptr(din).Ptr(dout));
        int[] o = Download<int>(dout, 64 * 12);

        int blockOdd = input.Count(v => (v & 1) != 0);
        for (int t = 0; t < 64; t++)
        {
            int lane = t % 32, w = t / 32 * 32;
            int Lane(int l) => input[w + l];
            int[] warp = Enumerable.Range(0, 32).Select(Lane).ToArray();
            int[] expected =
            [
                Lane(lane * 7 % 32),
                lane >= 3 ? Lane(lane - 3) : Lane(lane),
                lane + 5 < 32 ? Lane(lane + 5) : Lane(lane),
                Lane(lane ^ 9),
                Lane(lane ^ 3),
                (int)(uint)Enumerable.Range(0, 32).Where(l => (Lane(l) & 1) != 0).Sum(l => (long)(1u << l)),
                warp.Contains(42) ? 1 : 0,
                warp.All(v => v > 0) ? 1 : 0,
                warp.Sum(),
                unchecked((int)0xFFFFFFFFu),
                blockOdd,
                1,
            ];
            Assert.That(o.AsSpan(t * 12, 12).ToArray(), Is.EqualTo(expected), $"thread {t}");
        }
    }
}
