using System.Text;
using DeepKernels.Model.Safetensors;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Safetensors;

public class SafetensorsTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "dk-st-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>Writes a file from a raw header string and data bytes (for malformed files).</summary>
    internal static string WriteRaw(string path, string header, byte[] data, long? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        using var f = File.Create(path);
        f.Write(BitConverter.GetBytes((ulong)(declaredLength ?? h.Length)));
        f.Write(h);
        f.Write(data);
        return path;
    }

    [Test]
    public void WriterOutputReadsBackWithDtypesShapesBytesAndMetadata()
    {
        string path = Path.Combine(_dir, "a.safetensors");
        var f32 = new float[] { 1, -2.5f, 3, 4, 5, 6 };
        var bytesF32 = System.Runtime.InteropServices.MemoryMarshal.AsBytes(f32.AsSpan()).ToArray();
        var i64 = BitConverter.GetBytes(123456789012L);
        var u8 = new byte[] { 9, 8, 7 };
        var specs = new List<SafetensorsTensorSpec>
        {
            new("x.weight", DType.Float32, [2, 3]),
            new("count", DType.Int64, []),
            new("raw", DType.UInt8, [3]),
            new("empty", DType.BFloat16, [0, 4]),
            new("fp8", DType.Float8E4M3, [2, 2]),
        };
        using (var w = SafetensorsWriter.Create(path, specs, new Dictionary<string, string> { ["format"] = "pt" }))
        {
            w.WriteTensor("x.weight", bytesF32);
            w.WriteTensor("count", sink => { sink.Write(i64.AsSpan(0, 3)); sink.Write(i64.AsSpan(3)); });
            w.WriteTensor("raw", u8);
            w.WriteTensor("empty", ReadOnlySpan<byte>.Empty);
            w.WriteTensor("fp8", new byte[] { 0x7E, 0x80, 0x01, 0x38 });
            w.Complete();
        }
        var raw = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(raw, 0);
        Assert.That((8 + headerLength) % 8, Is.EqualTo(0), "data section 8-byte aligned");
        Assert.That(Encoding.UTF8.GetString(raw, 8, (int)headerLength), Does.StartWith("{\"__metadata__\":{\"format\":\"pt\"}"));

        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Tensors.Select(t => t.Name), Is.EqualTo(specs.Select(s => s.Name)));
        Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(file["x.weight"].DType, Is.EqualTo(DType.Float32));
        Assert.That(file["x.weight"].Shape, Is.EqualTo(new long[] { 2, 3 }));
        Assert.That(file["x.weight"].Data.ToArray(), Is.EqualTo(bytesF32));
        Assert.That(file["x.weight"].AsView().AsSpan<float>().ToArray(), Is.EqualTo(f32));
        Assert.That(BitConverter.ToInt64(file["count"].Data), Is.EqualTo(123456789012L));
        Assert.That(file["count"].Shape, Is.Empty);
        Assert.That(file["raw"].Data.ToArray(), Is.EqualTo(u8));
        Assert.That(file["empty"].ByteLength, Is.EqualTo(0));
        Assert.That(file["fp8"].DType, Is.EqualTo(DType.Float8E4M3));
        Assert.That(file.Contains("nope"), Is.False);
        Assert.Throws<KeyNotFoundException>(() => _ = file["nope"]);
    }

    [Test]
    public void WriterEnforcesOrderAndSizes()
    {
        using var stream = new MemoryStream();
        using var w = new SafetensorsWriter(stream, [new("a", DType.Float32, [2]), new("b", DType.UInt8, [1])], leaveOpen: true);
        Assert.Throws<InvalidOperationException>(() => w.WriteTensor("b", new byte[1]));
        Assert.Throws<ArgumentException>(() => w.WriteTensor("a", new byte[7]));
        Assert.Throws<InvalidOperationException>(() => w.WriteTensor("a", sink => sink.Write(new byte[4])));
        Assert.Throws<InvalidOperationException>(() => w.Complete());
        Assert.Throws<ArgumentException>(() => new SafetensorsWriter(new MemoryStream(), [new("a", DType.Float32, [2]), new("a", DType.UInt8, [1])]));
    }

    private static readonly byte[] EightBytes = new byte[8];

    [TestCase("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 1000L, "past the end")]
    [TestCase("{\"a\":{\"dtype\":\"U8\",\"shape\":[6],\"data_offsets\":[0,6]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", null, "overlap")]
    [TestCase("{\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}", null, "past the data section")]
    [TestCase("{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", null, "unknown dtype 'F64'")]
    [TestCase("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", null, "needs 12 bytes")]
    [TestCase("{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", null, "integers >= 0")]
    [TestCase("[1,2]", null, "JSON object")]
    [TestCase("{\"t\":", null, "not valid JSON")]
    public void MalformedFilesThrowSafetensorsFormatExceptionNamingTheProblem(string header, long? declared, string expected)
    {
        string path = WriteRaw(Path.Combine(_dir, "bad.safetensors"), header, EightBytes, declared);
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain(expected));
        Assert.That(ex.Message, Does.Contain("bad.safetensors"));
        Assert.That(ex.FilePath, Is.EqualTo(path));
        if (header.Contains("\"t\"", StringComparison.Ordinal) && !expected.Contains("JSON", StringComparison.Ordinal) && declared is null)
            Assert.That(ex.TensorName, Is.EqualTo("t"));
    }

    [Test]
    public void NonUtf8HeaderAndTinyFilesAreRejected()
    {
        string path = Path.Combine(_dir, "bad.safetensors");
        using (var f = File.Create(path))
        {
            f.Write(BitConverter.GetBytes(4UL));
            f.Write(new byte[] { (byte)'{', 0xFF, 0xFE, (byte)'}' });
        }
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(ex!.Message, Does.Contain("UTF-8"));
        File.WriteAllBytes(path, new byte[5]);
        Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
    }

    [Test]
    public void ShardedCheckpointResolvesNamesThroughTheIndex()
    {
        using (var w = SafetensorsWriter.Create(Path.Combine(_dir, "model-00001-of-00002.safetensors"), [new("a", DType.UInt8, [2])]))
        {
            w.WriteTensor("a", new byte[] { 1, 2 });
            w.Complete();
        }
        using (var w = SafetensorsWriter.Create(Path.Combine(_dir, "model-00002-of-00002.safetensors"), [new("b", DType.Int32, [1])]))
        {
            w.WriteTensor("b", BitConverter.GetBytes(77));
            w.Complete();
        }
        File.WriteAllText(Path.Combine(_dir, SafetensorsCheckpoint.IndexFileName),
            "{\"metadata\":{\"total_size\":6},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}}");
        using (var ckpt = SafetensorsCheckpoint.Open(_dir))
        {
            Assert.That(ckpt.TensorNames.Order(), Is.EqualTo(new[] { "a", "b" }));
            Assert.That(ckpt["a"].Data.ToArray(), Is.EqualTo(new byte[] { 1, 2 }));
            Assert.That(BitConverter.ToInt32(ckpt["b"].Data), Is.EqualTo(77));
            Assert.That(ckpt.Files, Has.Count.EqualTo(2));
        }
        File.WriteAllText(Path.Combine(_dir, SafetensorsCheckpoint.IndexFileName),
            "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}");
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(_dir).Dispose());
        Assert.That(ex!.TensorName, Is.EqualTo("c"));
        File.WriteAllText(Path.Combine(_dir, SafetensorsCheckpoint.IndexFileName), "{\"weight_map\":{\"a\":\"missing.safetensors\"}}");
        Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(_dir).Dispose());
        File.Delete(Path.Combine(_dir, SafetensorsCheckpoint.IndexFileName));
        using (var all = SafetensorsCheckpoint.Open(_dir)) Assert.That(all.Contains("a") && all.Contains("b"));
        using (var single = SafetensorsCheckpoint.Open(Path.Combine(_dir, "model-00002-of-00002.safetensors"))) Assert.That(single.TensorNames, Is.EqualTo(new[] { "b" }));
    }
}
