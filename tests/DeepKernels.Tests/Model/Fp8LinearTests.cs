using DeepKernels.Formats;
using DeepKernels.Model.Weights;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Model;

public class Fp8LinearTests
{
    [TestCase(1, 256, 512)]
    [TestCase(3, 200, 1000)]
    public void ForwardMatchesFloat64OfQuantizedActivationsAndDequantizedWeights(int rows, int n, int k)
    {
        var rng = new Random(9);
        var wf = Enumerable.Range(0, n * k).Select(_ => (float)(rng.NextDouble() * 2 - 1) / MathF.Sqrt(k)).ToArray();
        var codes = new Float8E4M3[n * k];
        int nb = WeightQuantization.BlockCount(n), kb = WeightQuantization.BlockCount(k);
        var scales = new float[nb * kb];
        WeightQuantization.Quantize(wf, n, k, codes, scales);
        var backend = TinyModelFixture.Backend;
        using var linear = new Fp8Linear("w", backend.Upload<Float8E4M3>(codes, DType.Float8E4M3, n, k), backend.Upload<float>(scales, DType.Float32, nb, kb));
        var x = Enumerable.Range(0, rows * k).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var y = new float[rows * n];
        linear.Forward(x, rows, y, new float[linear.ScratchFloats(rows)]);
        var w = linear.DequantizeToDouble();
        for (int r = 0; r < rows; r++)
        {
            // Activation quantization per 1x128 group, scalar path.
            var xq = new double[k];
            for (int g = 0; g < k; g += 128)
            {
                int end = Math.Min(k, g + 128);
                double amax = 0;
                for (int i = g; i < end; i++) amax = Math.Max(amax, Math.Abs(x[r * k + i]));
                float scale = (float)(Math.Max(amax, 1e-4f) / 448.0);
                for (int i = g; i < end; i++) xq[i] = Float8E4M3.ToSingle(Float8E4M3.ToRaw(x[r * k + i] / scale)) * (double)scale;
            }
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int c = 0; c < k; c++) s += w[(long)j * k + c] * xq[c];
                Assert.That(y[r * n + j], Is.EqualTo(s).Within(1e-5 + 1e-5 * Math.Abs(s)), $"[{r}, {j}]");
            }
        }
    }
}
