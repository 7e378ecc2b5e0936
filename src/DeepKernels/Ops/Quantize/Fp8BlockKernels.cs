using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using DeepKernels.Formats;

namespace DeepKernels.Ops.Quantize;

/// <summary>SIMD building blocks shared by activation and weight (de)quantization.</summary>
internal static class Fp8BlockKernels
{
    /// <summary>Largest finite |x| (NaN and infinities ignored); 0 for an empty span.</summary>
    public static float AbsMaxFinite(ReadOnlySpan<float> values)
    {
        int i = 0;
        float amax = 0;
        if (Vector256.IsHardwareAccelerated && values.Length >= 8)
        {
            ref float src = ref MemoryMarshal.GetReference(values);
            var best = Vector256<float>.Zero;
            for (; i <= values.Length - 8; i += 8)
            {
                var abs = Vector256.LoadUnsafe(ref src, (nuint)i).AsUInt32() & Vector256.Create(0x7FFF_FFFFu);
                var finite = Vector256.LessThan(abs, Vector256.Create(0x7F80_0000u));
                best = Vector256.Max(best, (abs & finite).AsSingle());
            }
            for (int j = 0; j < 8; j++) amax = MathF.Max(amax, best.GetElement(j));
        }
        for (; i < values.Length; i++)
        {
            float a = MathF.Abs(values[i]);
            if (float.IsFinite(a) && a > amax) amax = a;
        }
        return amax;
    }

    /// <summary>codes[i] = E4M3(values[i] / scale), bit-exact with the scalar division and <see cref="Float8E4M3.ToRaw(float)"/>.</summary>
    public static void QuantizeScaled(ReadOnlySpan<float> values, float scale, Span<byte> codes)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float src = ref MemoryMarshal.GetReference(values);
            ref byte dst = ref MemoryMarshal.GetReference(codes);
            var s = Vector256.Create(scale);
            for (; i <= values.Length - 32; i += 32)
            {
                var c0 = Float8E4M3.EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)i) / s);
                var c1 = Float8E4M3.EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)(i + 8)) / s);
                var c2 = Float8E4M3.EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)(i + 16)) / s);
                var c3 = Float8E4M3.EncodeVector(Vector256.LoadUnsafe(ref src, (nuint)(i + 24)) / s);
                Vector256.Narrow(Vector256.Narrow(c0, c1), Vector256.Narrow(c2, c3)).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < values.Length; i++) codes[i] = Float8E4M3.ToRaw(values[i] / scale);
    }

    /// <summary>values[i] = decode(codes[i]) * scale (NaN codes give NaN).</summary>
    public static void DequantizeScaled(ReadOnlySpan<byte> codes, float scale, Span<float> values)
    {
        Float8E4M3.ToSingle(codes, values);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float dst = ref MemoryMarshal.GetReference(values);
            var s = Vector256.Create(scale);
            for (; i <= values.Length - 8; i += 8)
                (Vector256.LoadUnsafe(ref dst, (nuint)i) * s).StoreUnsafe(ref dst, (nuint)i);
        }
        for (; i < values.Length; i++) values[i] *= scale;
    }

    /// <summary>Decodes scales stored as Float32 or UE8M0 bytes into floats.</summary>
    public static void ScalesToSingle(ReadOnlySpan<byte> ue8m0, Span<float> destination)
    {
        for (int i = 0; i < ue8m0.Length; i++) destination[i] = UE8M0.ToSingle(ue8m0[i]);
    }
}

/// <summary>Reads a host scale tensor (Float32 or UE8M0) as floats, rejecting non-finite or non-positive values.</summary>
internal static class ScaleReader
{
    /// <summary>Checks a host scale tensor in place (no allocation): finite and positive; UE8M0 0xFF is NaN.</summary>
    public static void Validate(Tensors.TensorView scales, string name)
    {
        if (scales.DType == Tensors.DType.Float32)
        {
            Guard.AllFinitePositive(scales.AsSpan<float>(), name);
            return;
        }
        int bad = scales.AsSpan<byte>().IndexOf((byte)0xFF);
        if (bad >= 0) throw new ArgumentException($"Expected {name}[{bad}] to be finite and > 0, got NaN (UE8M0 0xFF).", name);
    }

    public static float[] ToSingles(Tensors.TensorView scales, string name)
    {
        var result = new float[scales.ElementCount];
        if (scales.DType == Tensors.DType.UE8M0) Fp8BlockKernels.ScalesToSingle(scales.AsSpan<byte>(), result);
        else scales.AsSpan<float>().CopyTo(result);
        Guard.AllFinitePositive(result, name);
        return result;
    }
}
