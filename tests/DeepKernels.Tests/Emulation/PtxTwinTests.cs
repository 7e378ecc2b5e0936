using DeepKernels.Cuda;
using DeepKernels.Formats;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// The CPU twins of the PTX wrappers (native/include/dk) against per-element references written
/// here from the PTX ISA's fragment tables and conversion rules.
/// </summary>
public class PtxTwinTests : EmulatorTestBase
{
    // PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type": groupID = lane >> 2,
    // threadID_in_group = lane % 4. Element i (0..7) of A lives in register i / 2, half i % 2.
    private static (int Row, int Col) AElement(int lane, int i)
    {
        int group = lane >> 2, tig = lane % 4;
        int row = (i is 0 or 1 or 4 or 5) ? group : group + 8;
        int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        return (row, col);
    }

    // B element i (0..3): row (k) = tig*2 + (i & 1) (+8 for i >= 2), col (n) = groupID.
    private static (int Row, int Col) BElement(int lane, int i) => ((lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0), lane >> 2);

    // C/D element i (0..3): row = groupID (+8 for i >= 2), col = tig*2 + (i & 1).
    private static (int Row, int Col) CElement(int lane, int i) => ((lane >> 2) + (i >= 2 ? 8 : 0), (lane % 4) * 2 + (i & 1));

    [TestCase(false)]
    [TestCase(true)]
    public void MmaM16N8K16MatchesTheFragmentTables(bool f16)
    {
        var rng = new Random(f16 ? 11 : 12);
        ushort Encode(double v) => f16 ? BitConverter.HalfToUInt16Bits((Half)v) : BFloat16.ToRaw((float)v);
        double Decode(ushort b) => f16 ? (double)BitConverter.UInt16BitsToHalf(b) : BFloat16.ToSingle(b);
        var a = new ushort[16, 16];
        var b = new ushort[16, 8];
        var c = new float[16, 8];
        for (int i = 0; i < 16; i++) for (int j = 0; j < 16; j++) a[i, j] = Encode(rng.NextDouble() * 4 - 2);
        for (int i = 0; i < 16; i++) for (int j = 0; j < 8; j++) b[i, j] = Encode(rng.NextDouble() * 4 - 2);
        for (int i = 0; i < 16; i++) for (int j = 0; j < 8; j++) c[i, j] = (float)(rng.NextDouble() * 10 - 5);

        var fa = new uint[32 * 4];
        var fb = new uint[32 * 2];
        var fc = new float[32 * 4];
        for (int lane = 0; lane < 32; lane++)
        {
            for (int i = 0; i < 8; i++)
            {
                var (r, col) = AElement(lane, i);
                fa[lane * 4 + i / 2] |= (uint)a[r, col] << (16 * (i % 2));
            }
            for (int i = 0; i < 4; i++)
            {
                var (r, col) = BElement(lane, i);
                fb[lane * 2 + i / 2] |= (uint)b[r, col] << (16 * (i % 2));
            }
            for (int i = 0; i < 4; i++)
            {
                var (r, col) = CElement(lane, i);
                fc[lane * 4 + i] = c[r, col];
            }
        }
        ulong da = Upload<uint>(fa), db = Upload<uint>(fb), dc = Upload<float>(fc), dd = Alloc(32 * 4 * 4);
        Launch("dk_test_mma_m16n8k16", new Dim3(1), new Dim3(32), new KernelArgs().Ptr(da).Ptr(db).Ptr(dc).Ptr(dd).Int(f16 ? 1 : 0));
        float[] d = Download<float>(dd, 32 * 4);

        for (int lane = 0; lane < 32; lane++)
            for (int i = 0; i < 4; i++)
            {
                var (r, col) = CElement(lane, i);
                double expected = c[r, col];
                for (int k = 0; k < 16; k++) expected += Decode(a[r, k]) * Decode(b[k, col]);
                Assert.That(d[lane * 4 + i], Is.EqualTo((float)expected).Within(Math.Abs(expected) * 1e-6 + 1e-6), $"D[{r},{col}] from lane {lane}, c{i}");
            }
    }

    [TestCase(1, false)]
    [TestCase(2, false)]
    [TestCase(4, false)]
    [TestCase(1, true)]
    [TestCase(2, true)]
    [TestCase(4, true)]
    public void LdmatrixMatchesTheFragmentTable(int count, bool trans)
    {
        // Matrix m, row r, column c holds the unique value m*64 + r*8 + c.
        var src = new ushort[4 * 8 * 8];
        for (int i = 0; i < src.Length; i++) src[i] = (ushort)(i + 1000);
        ulong dsrc = Upload<ushort>(src), dout = Alloc(32 * count * 4);
        Launch("dk_test_ldmatrix", new Dim3(1), new Dim3(32), new KernelArgs().Ptr(dsrc).Ptr(dout).Int(count).Int(trans ? 1 : 0));
        uint[] got = Download<uint>(dout, 32 * count);
        for (int lane = 0; lane < 32; lane++)
            for (int m = 0; m < count; m++)
            {
                // Lane l holds row l/4, columns 2(l%4) and 2(l%4)+1 of each matrix (transposed: the
                // same positions of the transpose).
                int r0 = trans ? 2 * (lane % 4) : lane / 4, c0 = trans ? lane / 4 : 2 * (lane % 4);
                int r1 = trans ? r0 + 1 : r0, c1 = trans ? c0 : c0 + 1;
                uint expected = src[m * 64 + r0 * 8 + c0] | ((uint)src[m * 64 + r1 * 8 + c1] << 16);
                Assert.That(got[lane * count + m], Is.EqualTo(expected), $"lane {lane}, matrix {m}");
            }
    }

    [Test]
    public void ConversionsAreBitExact()
    {
        const int n = 65536;
        var x = new float[n];
        var rng = new Random(5);
        int idx = 0;
        // Every E4M3 value, the midpoints between neighbours and values just around them.
        for (int code = 0; code < 256; code++)
        {
            if ((code & 0x7F) == 0x7F) continue;
            float v = Float8E4M3.ToSingle((byte)code);
            float next = (code & 0x7F) == 0x7E ? 480f : Float8E4M3.ToSingle((byte)(code + 1));
            float mid = (v + next) / 2;
            x[idx++] = v;
            x[idx++] = mid;
            x[idx++] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(mid) + 1);
            x[idx++] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(mid) - 1);
        }
        float[] specials = [float.NaN, -float.NaN, float.PositiveInfinity, float.NegativeInfinity, 448f, 464f, 464.0001f, 1e30f, -1e30f, 0f, -0f, 1e-40f, -1e-40f, 1.0009765625f, 3.3895314e38f];
        foreach (float s in specials) x[idx++] = s;
        while (idx < n) x[idx++] = BitConverter.Int32BitsToSingle(rng.Next()) * (rng.Next(2) == 0 ? 1 : -1);
        var codes = new ushort[n];
        for (int i = 0; i < n; i++) codes[i] = (ushort)i; // every e4m3x2 pair

        ulong dx = Upload<float>(x), dcodes = Upload<ushort>(codes);
        ulong de4 = Alloc(n * 2), dbf = Alloc(n * 4), df16 = Alloc(n * 4), dbf2 = Alloc(n * 4), df32 = Alloc(n * 4);
        Launch("dk_test_convert", new Dim3(n / 128), new Dim3(128),
            new KernelArgs().Ptr(dx).Int(n).Ptr(de4).Ptr(dbf).Ptr(dcodes).Ptr(df16).Ptr(dbf2).Ptr(df32));
        ushort[] e4 = Download<ushort>(de4, n);
        uint[] bf = Download<uint>(dbf, n), f16 = Download<uint>(df16, n), bf2 = Download<uint>(dbf2, n);
        float[] f32 = Download<float>(df32, n);

        // cvt.rn.satfinite.e4m3x2.f32: RNE, saturate to +-448, NaN -> 0x7F; `hi` in the upper byte.
        byte E4(float v) => float.IsNaN(v) ? (byte)0x7F : Float8E4M3.ToRaw(v);
        // cvt.rn.bf16.f32: RNE, NaN -> canonical 0x7FFF.
        ushort Bf(float v) => float.IsNaN(v) ? (ushort)0x7FFF : BFloat16.ToRaw(v);
        // One assertion per output array (the first mismatch is reported with its index).
        var expectE4 = new ushort[n];
        var expectBf = new uint[n];
        for (int i = 0; i < n; i++)
        {
            float hi = x[i], lo = x[(i + 1) % n];
            expectE4[i] = (ushort)((E4(hi) << 8) | E4(lo));
            expectBf[i] = ((uint)Bf(hi) << 16) | Bf(lo);
        }
        AssertSame(e4, expectE4, "cvt.rn.satfinite.e4m3x2.f32 of (x[i], x[i+1])");
        AssertSame(bf, expectBf, "cvt.rn.bf16x2.f32 of (x[i], x[i+1])");
        static ushort F16Of(byte c) => (c & 0x7F) == 0x7F ? (ushort)(((c & 0x80) << 8) | 0x7FFF) : BitConverter.HalfToUInt16Bits((Half)Float8E4M3.ToSingle(c));
        static ushort Bf16Of(byte c) => (c & 0x7F) == 0x7F ? (ushort)(((c & 0x80) << 8) | 0x7FFF) : BFloat16.ToRaw(Float8E4M3.ToSingle(c));
        var expectF16 = new uint[n];
        var expectBf2 = new uint[n];
        var expectF32 = new int[n];
        for (int i = 0; i < n; i++)
        {
            byte lo = (byte)(i & 0xFF), hi = (byte)(i >> 8);
            expectF16[i] = ((uint)F16Of(hi) << 16) | F16Of(lo);
            expectBf2[i] = ((uint)Bf16Of(hi) << 16) | Bf16Of(lo);
            float v = Float8E4M3.ToSingle(lo);
            expectF32[i] = float.IsNaN(v) ? 0x7FC00000 | ((lo & 0x80) << 24) : BitConverter.SingleToInt32Bits(v);
        }
        AssertSame(f16, expectF16, "cvt.rn.f16x2.e4m3x2 of pair i");
        AssertSame(bf2, expectBf2, "e4m3x2 -> bf16x2 of pair i");
        AssertSame(f32.Select(BitConverter.SingleToInt32Bits).ToArray(), expectF32, "e4m3 -> f32 of the low byte of i");
    }

    [Test]
    public void CpAsyncLandsOnlyAtTheMatchingWait()
    {
        var src = new float[1024];
        for (int i = 0; i < src.Length; i++) src[i] = i * 0.5f + 1;
        ulong dsrc = Upload<float>(src), ddst = Alloc(1024 * 4);
        float[] Run(int mode)
        {
            Launch("dk_test_cp_async", new Dim3(1), new Dim3(128), new KernelArgs().Ptr(dsrc).Ptr(ddst).Int(mode));
            return Download<float>(ddst, 1024);
        }
        float[] all = Run(0);
        for (int w = 0; w < 1024; w++) Assert.That(all[w], Is.EqualTo(src[(w + 64) % 1024]), $"wait_group 0, word {w}");

        float[] partial = Run(1);
        for (int w = 0; w < 1024; w++)
        {
            int s = (w + 64) % 1024;
            if (s < 512) Assert.That(partial[w], Is.EqualTo(src[s]), $"wait_group 1: the first group has landed (word {w})");
            else Assert.That(BitConverter.SingleToUInt32Bits(partial[w]), Is.EqualTo(0xFFFFFFFFu), $"wait_group 1: the second group is still in flight (word {w})");
        }

        float[] missing = Run(2);
        Assert.That(missing.Select(BitConverter.SingleToUInt32Bits), Is.All.EqualTo(0xFFFFFFFFu), "without a wait nothing has landed: results are NaN");
    }

    [TestCase(2048)]
    [TestCase(1000)]
    [TestCase(7)]
    public void CpAsyncZeroFillCopiesOnlyTheValidBytes(int validBytes)
    {
        var src = new byte[validBytes];
        new Random(validBytes).NextBytes(src);
        ulong dsrc = Upload<byte>(src), ddst = Alloc(2048);
        Launch("dk_test_cp_async_zfill", new Dim3(1), new Dim3(128), new KernelArgs().Ptr(dsrc).Ptr(ddst).Int(validBytes));
        byte[] got = Download<byte>(ddst, 2048);
        Assert.That(got.AsSpan(0, validBytes).ToArray(), Is.EqualTo(src));
        Assert.That(got.AsSpan(validBytes).ToArray(), Is.All.EqualTo((byte)0));
    }
}
