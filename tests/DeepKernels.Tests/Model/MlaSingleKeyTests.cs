using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;

namespace DeepKernels.Tests.Model;

/// <summary>What the model relies on from the MLA op: with one key, the output is that key's (BF16) latent.</summary>
public class MlaSingleKeyTests
{
    [Test]
    public void OneKeyGivesItsLatentAsOutput()
    {
        using var cache = new PagedLatentCache(TinyModelFixture.Backend, 2, 64);
        int seq = cache.Allocator.CreateSequence();
        var rng = new Random(4);
        var latent = Enumerable.Range(0, 576).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        cache.Append(seq, latent);
        var q = Enumerable.Range(0, 4 * 576).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var table = new int[1];
        var lens = new int[1];
        cache.Allocator.ExportBlockTable([seq], 1, table, lens);
        var output = new float[4 * 512];
        var lse = new float[4];
        MlaDecode.Run(cache, q, 1, 1, 4, table, lens, 0.1352338f, false, output, lse);
        for (int h = 0; h < 4; h++)
            for (int i = 0; i < 512; i++)
                Assert.That(output[h * 512 + i], Is.EqualTo((float)(BFloat16)latent[i]).Within(1e-6), $"head {h}, [{i}]");
    }
}
