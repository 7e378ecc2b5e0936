using DeepKernels.Backends.Cpu;
using DeepKernels.Model;
using DeepKernels.Model.Config;
using DeepKernels.Model.Presets;

namespace DeepKernels.Tests.Model;

/// <summary>Writes the tiny preset (and small variants) once per test run into a temp directory and loads them.</summary>
internal static class TinyModelFixture
{
    private static readonly Lazy<string> Root = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "dk-model-tests-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        return dir;
    });

    private static readonly CpuBackend SharedBackend = new();

    private static readonly Lazy<DeepSeekV3Model> Tiny = new(() => DeepSeekV3Model.Load(TinyPreset.EnsureCheckpoint(out _, Root.Value), SharedBackend));

    public static CpuBackend Backend => SharedBackend;

    public static string CacheRoot => Root.Value;

    /// <summary>The built-in preset, loaded once.</summary>
    public static DeepSeekV3Model Model => Tiny.Value;

    /// <summary>A one-layer variant (dense or MoE) with the preset's widths.</summary>
    public static DeepSeekV3Model OneLayer(bool moe, ulong seed = 5)
    {
        var config = TinyPreset.Config with { NumHiddenLayers = 1, FirstKDenseReplace = moe ? 0 : 1, NumNextnPredictLayers = 0, SourceName = "one-layer" };
        return DeepSeekV3Model.Load(TinyPreset.EnsureCheckpoint(out _, Root.Value, config, seed), Backend);
    }
}
