using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>Inputs and comparisons shared by the CUDA-vs-CPU kernel tests.</summary>
internal static class KernelTestData
{
    /// <summary>Random E4M3 codes over the whole finite range (subnormals and zeros included, no NaN).</summary>
    public static byte[] Fp8Codes(int count, Random rng)
    {
        var codes = new byte[count];
        for (int i = 0; i < count; i++)
        {
            byte c;
            do c = (byte)rng.Next(256);
            while ((c & 0x7F) == 0x7F);
            codes[i] = c;
        }
        return codes;
    }

    /// <summary>Positive FP32 scales spread over two decades.</summary>
    public static float[] Scales(int count, Random rng)
    {
        var s = new float[count];
        for (int i = 0; i < count; i++) s[i] = (float)(Math.Pow(10, rng.NextDouble() * 2 - 3) * (1 + rng.NextDouble()));
        return s;
    }

    public static float[] Gaussian(int count, Random rng, double sigma = 1.0)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u = 1.0 - rng.NextDouble(), v = rng.NextDouble();
            x[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * v));
        }
        return x;
    }

    /// <summary>calc_diff(x, y) = 1 - 2 sum(x y) / sum(x^2 + y^2) in float64 (0 for two zero vectors).</summary>
    public static double CalcDiff(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        Assert.That(x.Length, Is.EqualTo(y.Length), "lengths");
        double xy = 0, sq = 0;
        for (int i = 0; i < x.Length; i++)
        {
            xy += (double)x[i] * y[i];
            sq += (double)x[i] * x[i] + (double)y[i] * y[i];
        }
        return sq == 0 ? 0 : 1 - 2 * xy / sq;
    }

    public static void AssertAllFinite(ReadOnlySpan<float> x, string what)
    {
        for (int i = 0; i < x.Length; i++)
        {
            if (!float.IsFinite(x[i])) Assert.Fail($"{what}[{i}] = {x[i]}");
        }
    }

    /// <summary>A backend tensor from host data.</summary>
    public static TensorBuffer Put<T>(Backend backend, T[] data, DType dtype, params long[] shape) where T : unmanaged =>
        backend.Upload<T>(data, dtype, shape);

    /// <summary>Reads a FP32 or BF16 tensor as floats.</summary>
    public static float[] ReadFloats(Backend backend, TensorView view) =>
        view.DType == DType.BFloat16
            ? backend.Download<ushort>(view).Select(BFloat16.ToSingle).ToArray()
            : backend.Download<float>(view);
}
