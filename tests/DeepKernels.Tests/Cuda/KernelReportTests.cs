using DeepKernels.Cuda.Kernels;

namespace DeepKernels.Tests.Cuda;

public class KernelReportTests
{
    internal const string SignaturesJson = """
        {"kernels":[
          {"name":"dk_quantize_act_fp8","params":[
            {"name":"x","type":"const void*","size":8},{"name":"x_is_bf16","type":"int","size":4},
            {"name":"q","type":"unsigned char*","size":8},{"name":"scales","type":"void*","size":8},
            {"name":"scales_ue8m0","type":"int","size":4},{"name":"m","type":"int","size":4},{"name":"k","type":"int","size":4}]},
          {"name":"dk_scale","params":[{"name":"y","type":"float*","size":8},{"name":"alpha","type":"float","size":4},{"name":"n","type":"long long","size":8}]}
        ]}
        """;

    private const string ReportJson = """
        {"compiler":"nvcc 11.8","archs":["sm_80","sm_90","compute_90"],"kernels":[
          {"name":"dk_quantize_act_fp8","arch":"sm_80","registers":30,"shared_bytes":0,"stack_bytes":0,"spill_stores":0,"spill_loads":0},
          {"name":"dk_quantize_act_fp8","arch":"sm_90","registers":32,"shared_bytes":16,"stack_bytes":8,"spill_stores":4,"spill_loads":12},
          {"name":"dk_other","arch":"sm_90","registers":64}
        ]}
        """;

    [Test]
    public void ResourceReportReadsEveryField()
    {
        var r = ResourceReport.Parse(ReportJson);
        Assert.That(r.Compiler, Is.EqualTo("nvcc 11.8"));
        Assert.That(r.Archs, Is.EqualTo(new[] { "sm_80", "sm_90", "compute_90" }));
        Assert.That(r.Kernels, Has.Count.EqualTo(3));
        Assert.That(r.Kernels[1], Is.EqualTo(new KernelResourceUsage("dk_quantize_act_fp8", "sm_90", 32, 16, 8, 4, 12)));
        Assert.That(r.Kernels[2].SpillLoads, Is.EqualTo(0), "missing counters read as 0");
        Assert.That(r.KernelNames, Is.EqualTo(new[] { "dk_other", "dk_quantize_act_fp8" }));
        Assert.That(r.ArchsOf("dk_quantize_act_fp8"), Is.EqualTo(new[] { "sm_80", "sm_90" }));
    }

    [TestCase(9, 0, "sm_90")]
    [TestCase(8, 0, "sm_80")]
    [TestCase(8, 6, "sm_80")]   // SASS runs on a higher minor of the same major
    [TestCase(8, 9, "sm_80")]
    [TestCase(10, 0, "compute_90")] // only the PTX can be JIT-compiled for a newer major
    [TestCase(7, 5, null)]
    public void BestArchFollowsTheDriversCompatibilityRules(int major, int minor, string? expected) =>
        Assert.That(ResourceReport.Parse(ReportJson).BestArchFor(major, minor), Is.EqualTo(expected));

    [Test]
    public void ArchSpecificSassOnlyRunsOnItsExactVersion()
    {
        var r = ResourceReport.Parse("""{"archs":["sm_90a"],"kernels":[]}""");
        Assert.That(r.BestArchFor(9, 0), Is.EqualTo("sm_90a"));
        Assert.That(r.BestArchFor(10, 0), Is.Null);
        var both = ResourceReport.Parse("""{"archs":["sm_90","sm_90a"],"kernels":[]}""");
        Assert.That(both.BestArchFor(9, 0), Is.EqualTo("sm_90a"));
    }

    [Test]
    public void ArchListFallsBackToTheKernelsArchs()
    {
        var r = ResourceReport.Parse("""{"kernels":[{"name":"a","arch":"sm_80"},{"name":"b","arch":"sm_90"}]}""");
        Assert.That(r.Archs, Is.EqualTo(new[] { "sm_80", "sm_90" }));
        Assert.That(r.Compiler, Is.EqualTo("unknown"));
    }

    [TestCase("not json", "invalid JSON")]
    [TestCase("[]", "JSON object")]
    [TestCase("""{"kernels":[{"arch":"sm_90"}]}""", "kernels[0]: expected a non-empty string 'name'")]
    [TestCase("""{"kernels":[{"name":"a","arch":"sm_90","registers":-1}]}""", "'registers' to be an integer >= 0")]
    [TestCase("""{"archs":"sm_90"}""", "'archs' must be an array")]
    public void ResourceReportErrorsNameTheProblem(string json, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => ResourceReport.Parse(json));
        Assert.That(e!.Message, Does.Contain(expected));
    }

    [Test]
    public void SignatureTableReadsParameters()
    {
        var t = KernelSignatureTable.Parse(SignaturesJson);
        Assert.That(t.Kernels.Select(k => k.Name), Is.EqualTo(new[] { "dk_quantize_act_fp8", "dk_scale" }));
        Assert.That(t.TryGet("dk_quantize_act_fp8", out var q), Is.True);
        Assert.That(q.Parameters, Has.Count.EqualTo(7));
        Assert.That(q.Parameters[0], Is.EqualTo(new KernelParameter("x", "const void*", 8)));
        Assert.That(q.Parameters.Select(p => p.Kind), Is.EqualTo(new[]
        {
            KernelArgKind.Pointer, KernelArgKind.Integer, KernelArgKind.Pointer, KernelArgKind.Pointer,
            KernelArgKind.Integer, KernelArgKind.Integer, KernelArgKind.Integer,
        }));
        Assert.That(t.TryGet("nope", out _), Is.False);
    }

    [Test]
    public void ValidateAcceptsMatchingArguments()
    {
        var t = KernelSignatureTable.Parse(SignaturesJson);
        Assert.DoesNotThrow(() => t.Validate("dk_scale", [KernelArg.Pointer(16ul), 2.0f, KernelArg.Int64(5)]));
    }

    [Test]
    public void ValidateNamesKernelAndCountMismatch()
    {
        var t = KernelSignatureTable.Parse(SignaturesJson);
        var e = Assert.Throws<ArgumentException>(() => t.Validate("dk_scale", [KernelArg.Pointer(16ul), 2.0f]));
        Assert.That(e!.Message, Does.Contain("dk_scale").And.Contain("expects 3 arguments, got 2").And.Contain("float* y"));
    }

    [Test]
    public void ValidateNamesKernelArgumentAndSizeMismatch()
    {
        var t = KernelSignatureTable.Parse(SignaturesJson);
        var e = Assert.Throws<ArgumentException>(() => t.Validate("dk_scale", [KernelArg.Pointer(16ul), 2.0f, 5]));
        Assert.That(e!.Message, Does.Contain("dk_scale").And.Contain("argument 2").And.Contain("'long long n'").And.Contain("expects 8 bytes"));
    }

    [Test]
    public void ValidateCatchesAFloatPassedForAnInt()
    {
        var t = KernelSignatureTable.Parse(SignaturesJson);
        var e = Assert.Throws<ArgumentException>(() => t.Validate("dk_quantize_act_fp8",
            [KernelArg.Pointer(8ul), 1.0f, KernelArg.Pointer(8ul), KernelArg.Pointer(8ul), 0, 1, 128]));
        Assert.That(e!.Message, Does.Contain("argument 1").And.Contain("'int x_is_bf16'").And.Contain("expects an integer"));
    }

    [Test]
    public void ValidateRejectsUnknownKernel()
    {
        var t = KernelSignatureTable.Parse(SignaturesJson);
        var e = Assert.Throws<ArgumentException>(() => t.Validate("dk_nope", []));
        Assert.That(e!.Message, Does.Contain("Unknown kernel 'dk_nope'").And.Contain("dk_scale"));
    }

    [TestCase("""{"kernels":[{"name":"a"}]}""", "expected a 'params' array")]
    [TestCase("""{"kernels":[{"name":"a","params":[{"name":"x","type":"int"}]}]}""", "missing integer 'size'")]
    [TestCase("""{"kernels":[{"name":"a","params":[]},{"name":"a","params":[]}]}""", "listed twice")]
    [TestCase("""{"kernel":[]}""", "'kernels' array")]
    public void SignatureTableErrorsNameTheProblem(string json, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => KernelSignatureTable.Parse(json));
        Assert.That(e!.Message, Does.Contain(expected));
    }
}

/// <summary>Checks on the kernel image this assembly embeds (ignored when the native build did not run).</summary>
public class EmbeddedKernelImageTests
{
    [Test]
    public void EveryKernelHasAnEntryForEverySassArchAndNoSpills()
    {
        var image = KernelImage.Current;
        if (!image.HasFatbin || image.Report is null) Assert.Ignore($"kernels not built: {image.Problem}");
        var report = image.Report;
        var sass = report.Archs.Where(a => a.StartsWith("sm_", StringComparison.Ordinal)).ToList();
        Assert.That(sass, Is.Not.Empty);
        Assert.That(report.KernelNames, Is.Not.Empty);
        foreach (string kernel in report.KernelNames)
            Assert.That(report.ArchsOf(kernel), Is.SupersetOf(sass), kernel);
        foreach (var k in report.Kernels)
            Assert.That(k.SpillStores + k.SpillLoads, Is.EqualTo(0), $"{k.Name} spills on {k.Arch}");
    }

    [Test]
    public void SignatureTableCoversEveryKernelInTheReport()
    {
        var image = KernelImage.Current;
        if (image.Report is null || image.Signatures is null) Assert.Ignore($"kernels not built: {image.Problem}");
        foreach (string kernel in image.Report.KernelNames)
            Assert.That(image.Signatures.TryGet(kernel, out _), Is.True, kernel);
    }

    [Test]
    public void ActivationQuantizationLaunchMatchesTheBuiltSignature()
    {
        // The C# launch and the kernel's declaration must agree: validate against the built table.
        var signatures = KernelImage.Current.Signatures;
        if (signatures is null) Assert.Ignore($"kernels not built: {KernelImage.Current.Problem}");
        Assert.DoesNotThrow(() => signatures.Validate("dk_quantize_act_fp8",
            [KernelArg.Pointer(16ul), 0, KernelArg.Pointer(32ul), KernelArg.Pointer(48ul), 1, 3, 300]));
    }
}

public class KernelArgTests
{
    [Test]
    public void HostTensorIsNotAKernelArgument()
    {
        var host = new DeepKernels.Tensors.TensorView(64, DeepKernels.Tensors.DType.Float32, DeepKernels.Tensors.MemoryLocation.Host, 4);
        var e = Assert.Throws<ArgumentException>(() => KernelArg.Pointer(host));
        Assert.That(e!.Message, Does.Contain("device tensor"));
        var device = new DeepKernels.Tensors.TensorView(64, DeepKernels.Tensors.DType.Float32, DeepKernels.Tensors.MemoryLocation.Device, 4);
        Assert.That(KernelArg.Pointer(device).Value, Is.EqualTo(64ul));
    }

    [Test]
    public void ScalarsKeepTheirBits()
    {
        Assert.That(((KernelArg)(-1)).Value, Is.EqualTo(0xFFFFFFFFul));
        Assert.That(((KernelArg)(-1)).Size, Is.EqualTo(4));
        Assert.That(((KernelArg)1.5f).Value, Is.EqualTo((ulong)BitConverter.SingleToUInt32Bits(1.5f)));
        Assert.That(KernelArg.Int64(-2).Value, Is.EqualTo(unchecked((ulong)-2L)));
        Assert.That(KernelArg.Struct([1, 2, 3]).Size, Is.EqualTo(3));
    }
}
