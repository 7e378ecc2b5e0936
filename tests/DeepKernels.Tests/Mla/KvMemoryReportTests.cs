using DeepKernels.Memory.KvCache;

namespace DeepKernels.Tests.Mla;

public class KvMemoryReportTests
{
    [Test]
    public void DeepSeekV3Figures()
    {
        var r = KvMemoryReport.DeepSeekV3;
        Assert.That(r.MlaBf16BytesPerToken, Is.EqualTo(1152));
        Assert.That(r.MlaFp8BytesPerToken, Is.EqualTo(656));
        Assert.That(r.MlaFp8BytesPerToken, Is.EqualTo(LatentCacheFormat.Fp8BytesPerToken));
        Assert.That(r.MhaBf16BytesPerToken, Is.EqualTo(2 * 128 * 128 * 2));
        Assert.That(r.MhaFullDimsBf16BytesPerToken, Is.EqualTo(128 * 320 * 2));
        Assert.That(r.Total(r.MlaBf16BytesPerToken, 128 * 1024), Is.EqualTo(1152L * 61 * 131072));
        string text = r.Format(131072);
        Assert.That(text, Does.Contain("61 layers").And.Contain("656").And.Contain("56.89x"));
    }
}
