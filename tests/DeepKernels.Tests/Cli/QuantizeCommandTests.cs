using System.Runtime.InteropServices;
using DeepKernels.Formats;
using DeepKernels.Model.Safetensors;
using DeepKernels.Tensors;
using DeepKernels.Tests.Safetensors;

namespace DeepKernels.Tests.Cli;

public class QuantizeCommandTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "dk-q-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = DeepKernels.Cli.Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private static float[] Values(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(i => (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-2, 2)))).ToArray();
    }

    private sealed record Source(string Name, DType DType, long[] Shape, byte[] Bytes, float[]? Values);

    private List<Source> MakeInput(string path)
    {
        var list = new List<Source>();
        void Add(string name, DType dtype, long[] shape, int seed)
        {
            int count = (int)shape.Aggregate(1L, (a, b) => a * b);
            var v = Values(count, seed);
            byte[] bytes = dtype switch
            {
                DType.Float32 => MemoryMarshal.AsBytes(v.AsSpan()).ToArray(),
                DType.BFloat16 => MemoryMarshal.AsBytes(v.Select(BFloat16.ToRaw).ToArray().AsSpan()).ToArray(),
                DType.Float16 => MemoryMarshal.AsBytes(v.Select(x => (Half)x).ToArray().AsSpan()).ToArray(),
                _ => Enumerable.Range(0, count * dtype.SizeInBytes()).Select(i => (byte)(i * 13 + seed)).ToArray(),
            };
            float[] widened = dtype switch
            {
                DType.Float32 => v,
                DType.BFloat16 => v.Select(x => BFloat16.ToSingle(BFloat16.ToRaw(x))).ToArray(),
                DType.Float16 => v.Select(x => (float)(Half)x).ToArray(),
                _ => [],
            };
            list.Add(new Source(name, dtype, shape, bytes, widened));
        }
        Add("model.embed_tokens.weight", DType.BFloat16, [50, 16], 1);
        Add("model.layers.0.input_layernorm.weight", DType.BFloat16, [16], 2);
        Add("model.layers.0.self_attn.q_a_proj.weight", DType.BFloat16, [200, 300], 3);
        Add("model.layers.0.self_attn.q_a_layernorm.weight", DType.Float32, [1, 200], 4);
        Add("model.layers.0.mlp.gate.weight", DType.BFloat16, [8, 300], 5);
        Add("model.layers.0.mlp.gate.e_score_correction_bias", DType.Float32, [8], 6);
        Add("model.layers.0.mlp.experts.0.down_proj.weight", DType.Float32, [130, 129], 7);
        Add("model.layers.0.mlp.experts.0.up_proj.weight", DType.Float16, [64, 256], 8);
        Add("model.layers.0.self_attn.kv_a_proj_with_mqa.bias", DType.Float32, [10], 9);
        Add("lm_head.weight", DType.BFloat16, [50, 16], 10);
        Add("model.layers.0.mlp.ids", DType.Int64, [3], 11);
        using var w = SafetensorsWriter.Create(path, list.Select(s => new SafetensorsTensorSpec(s.Name, s.DType, s.Shape)).ToList(), new Dictionary<string, string> { ["format"] = "pt" });
        foreach (var s in list) w.WriteTensor(s.Name, s.Bytes);
        w.Complete();
        return list;
    }

    private static readonly HashSet<string> Quantized =
    [
        "model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.0.up_proj.weight",
    ];

    [TestCase("f32")]
    [TestCase("ue8m0")]
    public void QuantizesLinearWeightsAndCopiesEverythingElse(string scaleFormat)
    {
        string input = Path.Combine(_dir, "in.safetensors"), output = Path.Combine(_dir, "out.safetensors");
        var sources = MakeInput(input);
        var (code, stdout, stderr) = Run("quantize", "--input", input, "--output", output, "--scale-format", scaleFormat);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("quantized 3"));
        Assert.That(Directory.GetFiles(_dir).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "in.safetensors", "out.safetensors" }), "no temp file left");

        using var file = SafetensorsFile.Open(output);
        Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(file.Tensors, Has.Count.EqualTo(sources.Count + Quantized.Count));
        foreach (var s in sources)
        {
            var t = file[s.Name];
            Assert.That(t.Shape, Is.EqualTo(s.Shape), s.Name);
            if (!Quantized.Contains(s.Name))
            {
                Assert.That(t.DType, Is.EqualTo(s.DType), s.Name);
                Assert.That(t.Data.ToArray(), Is.EqualTo(s.Bytes), $"{s.Name} copied byte for byte");
                Assert.That(file.Contains(s.Name + "_scale_inv"), Is.False);
                continue;
            }
            Assert.That(t.DType, Is.EqualTo(DType.Float8E4M3), s.Name);
            int rows = (int)s.Shape[0], cols = (int)s.Shape[1], rb = (rows + 127) / 128, cb = (cols + 127) / 128;
            var scaleTensor = file[s.Name + "_scale_inv"];
            Assert.That(scaleTensor.Shape, Is.EqualTo(new long[] { rb, cb }));
            float[] scales = scaleFormat == "f32"
                ? MemoryMarshal.Cast<byte, float>(scaleTensor.Data).ToArray()
                : scaleTensor.Data.ToArray().Select(UE8M0.ToSingle).ToArray();
            Assert.That(scaleTensor.DType, Is.EqualTo(scaleFormat == "f32" ? DType.Float32 : DType.UE8M0));
            var codes = t.Data.ToArray();
            for (int i = 0; i < rb; i++)
                for (int j = 0; j < cb; j++)
                {
                    // Reference scale: float64 amax of the block / 448, as float (rounded up to 2^e for ue8m0).
                    double amax = 0;
                    for (int r = i * 128; r < Math.Min(rows, i * 128 + 128); r++)
                        for (int c = j * 128; c < Math.Min(cols, j * 128 + 128); c++) amax = Math.Max(amax, Math.Abs((double)s.Values![r * cols + c]));
                    float expected = (float)(Math.Max(amax, 1e-4f) / 448.0);
                    if (scaleFormat == "ue8m0") expected = (float)Math.Pow(2, Math.Ceiling(Math.Log2(expected)));
                    Assert.That(scales[i * cb + j], Is.EqualTo(expected), $"{s.Name} scale [{i},{j}]");
                    for (int r = i * 128; r < Math.Min(rows, i * 128 + 128); r++)
                        for (int c = j * 128; c < Math.Min(cols, j * 128 + 128); c++)
                        {
                            double x = s.Values![r * cols + c], deq = Float8E4M3.ToSingle(codes[r * cols + c]) * (double)scales[i * cb + j];
                            double target = Math.Abs(x / scales[i * cb + j]);
                            double halfUlp = (target < 1.0 / 64 ? 1.0 / 512 : Math.Pow(2, Math.Floor(Math.Log2(target)) - 3)) / 2;
                            Assert.That(Math.Abs(deq - x), Is.LessThanOrEqualTo(halfUlp * scales[i * cb + j] * (1 + 1e-6)), $"{s.Name}[{r},{c}]");
                        }
                }
        }
    }

    private static readonly byte[] Data16 = new byte[16];

    [TestCase("{\"w.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 4096L, "past the end")]
    [TestCase("{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}}", null, "overlap")]
    [TestCase("{\"w.weight\":{\"dtype\":\"Q4\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", null, "unknown dtype")]
    [TestCase("{\"w.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", null, "needs 24 bytes")]
    public void BadInputFilesGiveACleanErrorAndNoOutput(string header, long? declared, string expected)
    {
        string input = SafetensorsTests.WriteRaw(Path.Combine(_dir, "bad.safetensors"), header, Data16, declared);
        string output = Path.Combine(_dir, "out.safetensors");
        var (code, _, stderr) = Run("quantize", "--input", input, "--output", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain(expected).And.Contain("bad.safetensors"));
        Assert.That(stderr, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(Directory.GetFiles(_dir).Select(Path.GetFileName), Is.EqualTo(new[] { "bad.safetensors" }), "no output or temp file");
    }

    [Test]
    public void UsageErrors()
    {
        Assert.That(Run("quantize", "--output", "x").Code, Is.EqualTo(2));
        string input = Path.Combine(_dir, "in.safetensors");
        MakeInput(input);
        var (code, _, stderr) = Run("quantize", "--input", input, "--output", Path.Combine(_dir, "o.safetensors"), "--scale-format", "fp16");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(stderr, Does.Contain("f32 or ue8m0"));
        Assert.That(Run("quantize", "--input", input, "--output", input).Code, Is.EqualTo(2));
        Assert.That(Run("quantize", "--input", Path.Combine(_dir, "missing.safetensors"), "--output", Path.Combine(_dir, "o.safetensors")).Code, Is.EqualTo(1));
        Assert.That(File.Exists(Path.Combine(_dir, "o.safetensors")), Is.False);
    }

    [Test]
    public void SelectsWeightsByTheDocumentedRules()
    {
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("model.layers.3.mlp.experts.7.gate_proj.weight", DType.BFloat16, [2048, 7168]));
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("model.layers.3.mlp.shared_experts.up_proj.weight", DType.Float16, [10, 10]));
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("model.layers.3.mlp.gate.weight", DType.BFloat16, [256, 7168]), Is.False);
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("model.norm.weight", DType.BFloat16, [1, 7168]), Is.False);
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("model.layers.0.self_attn.kv_a_layernorm.weight", DType.BFloat16, [1, 512]), Is.False);
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("x.weight", DType.Float8E4M3, [128, 128]), Is.False);
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("x.weight", DType.Float32, [128]), Is.False);
        Assert.That(DeepKernels.Cli.Commands.QuantizeCommand.IsQuantizable("x.bias", DType.Float32, [4, 4]), Is.False);
    }
}
