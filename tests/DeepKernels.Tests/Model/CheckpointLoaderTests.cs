using System.Buffers.Binary;
using System.Text;
using CsCheck;
using DeepKernels.Model;
using DeepKernels.Model.Checkpoint;
using DeepKernels.Model.Config;
using DeepKernels.Model.Presets;
using DeepKernels.Model.Safetensors;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Model;

/// <summary>Loading checkpoints: shards, and every kind of broken file gives a clear, documented exception.</summary>
public class CheckpointLoaderTests
{
    private static readonly DeepSeekV3Config Small = TinyPreset.Config with
    {
        NumHiddenLayers = 1, FirstKDenseReplace = 1, NumNextnPredictLayers = 0, VocabSize = 256, SourceName = "loader test",
    };

    private static string NewDir()
    {
        string dir = Path.Combine(TinyModelFixture.CacheRoot, "loader-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    private static string Save(CheckpointWriter writer)
    {
        string dir = NewDir();
        writer.Save(Path.Combine(dir, "model.safetensors"));
        File.WriteAllText(Path.Combine(dir, "config.json"), Small.ToJson());
        return dir;
    }

    private static CheckpointWriter Valid() => TinyPreset.BuildCheckpoint(Small, 11);

    private static float[] FirstLogits(DeepSeekV3Model model)
    {
        using var session = model.CreateSession(1, 4);
        var logits = new float[model.Config.VocabSize];
        session.Forward([session.CreateSequence()], [[7, 8]], logits);
        return logits;
    }

    [Test]
    public void AShardedCheckpointLoadsLikeTheSingleFile()
    {
        string single = Save(Valid());
        string sharded = NewDir();
        var shards = new[] { new CheckpointWriter(), new CheckpointWriter() };
        var map = new Dictionary<string, string>();
        using (var file = SafetensorsFile.Open(Path.Combine(single, "model.safetensors")))
        {
            int i = 0;
            foreach (var t in file.Tensors)
            {
                shards[i % 2].Add(t.Name, t.DType, t.Shape.ToArray(), t.Data);
                map[t.Name] = $"model-0000{i % 2 + 1}-of-00002.safetensors";
                i++;
            }
        }
        shards[0].Save(Path.Combine(sharded, "model-00001-of-00002.safetensors"));
        shards[1].Save(Path.Combine(sharded, "model-00002-of-00002.safetensors"));
        File.WriteAllText(Path.Combine(sharded, "model.safetensors.index.json"),
            "{\"metadata\": {}, \"weight_map\": {" + string.Join(", ", map.Select(kv => $"\"{kv.Key}\": \"{kv.Value}\"")) + "}}");
        File.WriteAllText(Path.Combine(sharded, "config.json"), Small.ToJson());
        using var a = DeepSeekV3Model.Load(single, TinyModelFixture.Backend);
        using var b = DeepSeekV3Model.Load(sharded, TinyModelFixture.Backend);
        Assert.That(FirstLogits(b), Is.EqualTo(FirstLogits(a)));
        Assert.That(b.Weights.Bytes, Is.EqualTo(a.Weights.Bytes));
    }

    [Test]
    public void AMissingTensorIsNamed()
    {
        var w = Valid();
        const string name = "model.layers.0.self_attn.o_proj.weight_scale_inv";
        Assert.That(w.Remove(name), Is.True);
        string dir = Save(w);
        var e = Assert.Throws<CheckpointException>(() => DeepSeekV3Model.Load(dir, TinyModelFixture.Backend))!;
        Assert.That(e.Tensor, Is.EqualTo(name));
        Assert.That(e.File, Is.EqualTo(dir));
        Assert.That(e.Message, Does.Contain(name).And.Contain("missing"));
    }

    [Test]
    public void AWrongShapeIsNamed()
    {
        var w = Valid();
        const string name = "model.layers.0.input_layernorm.weight";
        w.Remove(name);
        w.Add(name, DType.BFloat16, [256], new byte[512]);
        string dir = Save(w);
        var e = Assert.Throws<CheckpointException>(() => DeepSeekV3Model.Load(dir, TinyModelFixture.Backend))!;
        Assert.That(e.Tensor, Is.EqualTo(name));
        Assert.That(e.File, Does.EndWith("model.safetensors"));
        Assert.That(e.Message, Does.Contain("expected shape [512]").And.Contain("BF16[256]"));
    }

    [Test]
    public void AWrongDTypeIsNamed()
    {
        var w = Valid();
        const string name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv";
        w.Remove(name);
        w.Add(name, DType.Int32, [5, 4], new byte[80]);
        string dir = Save(w);
        var e = Assert.Throws<CheckpointException>(() => DeepSeekV3Model.Load(dir, TinyModelFixture.Backend))!;
        Assert.That(e.Tensor, Is.EqualTo(name));
        Assert.That(e.Message, Does.Contain("expected dtype F32").And.Contain("I32[5, 4]"));
    }

    [Test]
    public void NonPositiveScalesAreRejected()
    {
        var w = Valid();
        const string name = "model.layers.0.mlp.down_proj.weight_scale_inv";
        w.Remove(name);
        var scales = Enumerable.Repeat(0.01f, 4 * 8).ToArray();
        scales[3] = float.NaN;
        w.Add<float>(name, DType.Float32, [4, 8], scales);
        var e = Assert.Throws<CheckpointException>(() => DeepSeekV3Model.Load(Save(w), TinyModelFixture.Backend))!;
        Assert.That(e.Tensor, Is.EqualTo(name));
        Assert.That(e.Message, Does.Contain("[0, 3]"));
    }

    [Test]
    public void ATruncatedFileIsReportedWithTheFile()
    {
        string dir = Save(Valid());
        string file = Path.Combine(dir, "model.safetensors");
        using (var fs = new FileStream(file, FileMode.Open)) fs.SetLength(fs.Length - 100);
        var e = Assert.Throws<SafetensorsFormatException>(() => DeepSeekV3Model.Load(dir, TinyModelFixture.Backend))!;
        Assert.That(e.FilePath, Is.EqualTo(file));
        Assert.That(e.Message, Does.Contain(file));
    }

    [Test]
    public void AHeaderLargerThanTheFileIsReported()
    {
        string dir = Save(Valid());
        string file = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)bytes.Length);
        File.WriteAllBytes(file, bytes);
        var e = Assert.Throws<SafetensorsFormatException>(() => DeepSeekV3Model.Load(dir, TinyModelFixture.Backend))!;
        Assert.That(e.FilePath, Is.EqualTo(file));
    }

    [Test]
    public void ANonUtf8HeaderIsReported()
    {
        string dir = Save(Valid());
        string file = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        int at = Encoding.ASCII.GetString(bytes, 8, 200).IndexOf("model", StringComparison.Ordinal) + 8;
        bytes[at] = 0xC3;
        bytes[at + 1] = 0x28; // an invalid two-byte sequence
        File.WriteAllBytes(file, bytes);
        var e = Assert.Throws<SafetensorsFormatException>(() => DeepSeekV3Model.Load(dir, TinyModelFixture.Backend))!;
        Assert.That(e.FilePath, Is.EqualTo(file));
    }

    [Test]
    public void MutatedFilesOnlyRaiseDocumentedExceptions()
    {
        var writer = new CheckpointWriter();
        writer.Add<float>("a.weight", DType.Float32, [3, 5], Enumerable.Range(0, 15).Select(i => (float)i).ToArray());
        writer.Add<ushort>("b.norm", DType.BFloat16, [7], new ushort[7]);
        writer.Add<byte>("c.fp8", DType.Float8E4M3, [2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
        byte[] valid = writer.ToBytes();
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(valid);
        string dir = NewDir();
        string file = Path.Combine(dir, "model.safetensors");
        int opened = 0, rejected = 0;
        Gen.Select(Gen.Int[0, 2], Gen.Int[0, int.MaxValue], Gen.Int[1, 255]).Sample(m =>
        {
            var (kind, where, value) = m;
            byte[] bytes;
            switch (kind)
            {
                case 0: // truncation
                    bytes = valid[..(where % valid.Length)];
                    break;
                case 1: // flipped header byte (length prefix included)
                    bytes = (byte[])valid.Clone();
                    bytes[where % (8 + headerLength)] ^= (byte)value;
                    break;
                default: // shifted data offsets: rewrite one number inside the header
                    string header = Encoding.UTF8.GetString(valid, 8, headerLength);
                    var numbers = System.Text.RegularExpressions.Regex.Matches(header, "[0-9]+");
                    var pick = numbers[where % numbers.Count];
                    long shifted = long.Parse(pick.Value, System.Globalization.CultureInfo.InvariantCulture) + value - 128;
                    string changed = header[..pick.Index] + shifted.ToString(System.Globalization.CultureInfo.InvariantCulture) + header[(pick.Index + pick.Length)..];
                    byte[] h = Encoding.UTF8.GetBytes(changed);
                    bytes = new byte[8 + h.Length + valid.Length - 8 - headerLength];
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)h.Length);
                    h.CopyTo(bytes, 8);
                    valid.AsSpan(8 + headerLength).CopyTo(bytes.AsSpan(8 + h.Length));
                    break;
            }
            File.WriteAllBytes(file, bytes);
            try
            {
                using var checkpoint = CheckpointDirectory.Open(dir);
                long sum = 0;
                foreach (string name in checkpoint.Names)
                {
                    var t = checkpoint.Get(name);
                    foreach (byte b in CheckpointDirectory.Bytes(t)) sum += b;
                }
                opened++;
            }
            catch (Exception e) when (e is SafetensorsFormatException or CheckpointException)
            {
                Assert.That(e.Message, Does.Contain(file).Or.Contain(dir));
                rejected++;
            }
        }, iter: 300, threads: 1);
        Assert.That(rejected, Is.GreaterThan(0));
        Assert.That(opened + rejected, Is.EqualTo(300));
    }
}
