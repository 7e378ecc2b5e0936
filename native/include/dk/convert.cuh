// Number-format conversions used by the kernels. Two kinds:
//  * exact software conversions that implement the numerics contract (DESIGN.md) bit for bit on
//    every arch (e4m3 encode with NaN -> 0x7F|sign, decodes that are exact by construction);
//  * wrappers of the PTX cvt instructions (sm_80: f32->bf16; sm_89+: e4m3x2 <-> f16x2), each with
//    a CPU twin under DK_EMULATOR that reproduces the instruction's result bits.
#pragma once
#include "dk/common.cuh"

namespace dk {

DK_DEVICE float bits_to_f32(uint32_t b) { return __uint_as_float(b); }
DK_DEVICE uint32_t f32_to_bits(float f) { return __float_as_uint(f); }

// bfloat16 bits -> float (exact).
DK_DEVICE float bf16_to_f32(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

// float -> bfloat16, round to nearest even (cvt.rn.bf16.f32). NaN -> canonical 0x7FFF.
DK_DEVICE uint16_t f32_to_bf16_rn(float f)
{
#if defined(__CUDA_ARCH__) && !defined(DK_EMULATOR)
  uint16_t r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
#else
  uint32_t b = __float_as_uint(f);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  b += 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
#endif
}

// Two floats -> bf16x2 (cvt.rn.bf16x2.f32 d, hi, lo): `hi` lands in the upper 16 bits.
DK_DEVICE uint32_t f32x2_to_bf16x2_rn(float hi, float lo)
{
#if defined(__CUDA_ARCH__) && !defined(DK_EMULATOR)
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return (static_cast<uint32_t>(f32_to_bf16_rn(hi)) << 16) | f32_to_bf16_rn(lo);
#endif
}

// E4M3 (OCP E4M3FN) code -> float, exact.
DK_DEVICE float e4m3_to_f32(uint8_t code)
{
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t exp = (code >> 3) & 0xFu, man = code & 7u;
  if (exp == 0xFu && man == 7u) return __uint_as_float(sign | 0x7FC00000u);
  if (exp == 0u) {
    const float v = static_cast<float>(man) * (1.0f / 512.0f);  // subnormal: man * 2^-9, exact
    return sign ? -v : v;
  }
  return __uint_as_float(sign | ((exp + 120u) << 23) | (man << 20));
}

// float -> E4M3, round to nearest even, saturating to +-448 (infinities too); NaN -> 0x7F|sign.
// This is the numerics contract shared with the CPU backend (Float8E4M3.ToRaw).
DK_DEVICE uint8_t f32_to_e4m3_sat(float f)
{
  const uint32_t bits = __float_as_uint(f);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint8_t>(sign | 0x7Fu);
  uint32_t code;
  if (abs < 0x3C800000u) {
    // |x| < 2^-6: multiples of 2^-9; the scaling is exact and rintf rounds half to even.
    code = static_cast<uint32_t>(rintf(__uint_as_float(abs) * 512.0f));
  } else {
    const uint32_t rounded = abs + 0x7FFFFu + ((abs >> 20) & 1u);
    code = (rounded >> 20) - ((127u - 7u) << 3);
    if (code > 0x7Eu) code = 0x7Eu;
  }
  return static_cast<uint8_t>(sign | code);
}

// Two floats -> e4m3x2 (cvt.rn.satfinite.e4m3x2.f32 d, hi, lo): `hi` in the upper byte.
// Hardware on sm_89+, the software conversion elsewhere. NaN gives 0x7F (the instruction's
// canonical NaN, no sign), which is the only place this differs from f32_to_e4m3_sat.
DK_DEVICE uint16_t f32x2_to_e4m3x2_sat(float hi, float lo)
{
#if defined(__CUDA_ARCH__) && !defined(DK_EMULATOR) && __CUDA_ARCH__ >= 890
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
#else
  const uint8_t h = (hi != hi) ? 0x7Fu : f32_to_e4m3_sat(hi);
  const uint8_t l = (lo != lo) ? 0x7Fu : f32_to_e4m3_sat(lo);
  return static_cast<uint16_t>((h << 8) | l);
#endif
}

// E4M3 code -> f16 bits, exact (every E4M3 value is an f16). NaN -> 0x7FFF|sign.
DK_DEVICE uint16_t e4m3_to_f16_bits(uint8_t code)
{
  const uint16_t sign = static_cast<uint16_t>((code & 0x80u) << 8);
  const uint32_t exp = (code >> 3) & 0xFu, man = code & 7u;
  if (exp == 0xFu && man == 7u) return static_cast<uint16_t>(sign | 0x7FFFu);
  if (exp == 0u) {
    if (man == 0u) return sign;
    // man * 2^-9 is a normal f16: with the leading one at bit p the value is 2^(p-9) * 1.f.
    const int p = man >= 4u ? 2 : (man >= 2u ? 1 : 0);
    const uint32_t e = static_cast<uint32_t>(15 + p - 9);
    const uint32_t m = (man << (10 - p)) & 0x3FFu;
    return static_cast<uint16_t>(sign | (e << 10) | m);
  }
  return static_cast<uint16_t>(sign | ((exp + 8u) << 10) | (man << 7));
}

// e4m3x2 -> f16x2 (cvt.rn.f16x2.e4m3x2): byte i goes to half i (low byte -> low half).
DK_DEVICE uint32_t e4m3x2_to_f16x2(uint16_t pair)
{
#if defined(__CUDA_ARCH__) && !defined(DK_EMULATOR) && __CUDA_ARCH__ >= 890
  uint32_t r;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"(pair));
  return r;
#else
  return (static_cast<uint32_t>(e4m3_to_f16_bits(static_cast<uint8_t>(pair >> 8))) << 16) |
         e4m3_to_f16_bits(static_cast<uint8_t>(pair & 0xFFu));
#endif
}

// E4M3 code -> bf16 bits, exact (E4M3 values all fit bf16). NaN -> 0x7FFF|sign.
DK_DEVICE uint16_t e4m3_to_bf16_bits(uint8_t code)
{
  const uint16_t sign = static_cast<uint16_t>((code & 0x80u) << 8);
  if ((code & 0x7Fu) == 0x7Fu) return static_cast<uint16_t>(sign | 0x7FFFu);
  return static_cast<uint16_t>(__float_as_uint(e4m3_to_f32(code)) >> 16);
}

// e4m3x2 -> bf16x2: byte i goes to half i.
DK_DEVICE uint32_t e4m3x2_to_bf16x2(uint16_t pair)
{
  return (static_cast<uint32_t>(e4m3_to_bf16_bits(static_cast<uint8_t>(pair >> 8))) << 16) |
         e4m3_to_bf16_bits(static_cast<uint8_t>(pair & 0xFFu));
}

// f16 bits -> float (exact).
DK_DEVICE float f16_to_f32(uint16_t h)
{
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  if (exp == 0x1Fu) return __uint_as_float(sign | 0x7F800000u | (man << 13));
  if (exp == 0u) {
    const float v = static_cast<float>(man) * (1.0f / 16777216.0f);  // man * 2^-24
    return sign ? -v : v;
  }
  return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// UE8M0: the smallest power of two >= a positive finite scale, as its biased exponent byte.
DK_DEVICE uint32_t ue8m0_round_up(float scale)
{
  const uint32_t bits = __float_as_uint(scale);
  uint32_t e = bits >> 23;
  if (e == 0u) return 0u;
  if ((bits & 0x7FFFFFu) != 0u) ++e;
  return e > 254u ? 254u : e;
}

// UE8M0 byte -> float 2^(e-127) (0xFF is NaN).
DK_DEVICE float ue8m0_to_f32(uint32_t e)
{
  if (e == 0xFFu) return __uint_as_float(0x7FC00000u);
  if (e == 0u) return __uint_as_float(0x00400000u);  // 2^-127 is subnormal
  return __uint_as_float(e << 23);
}

}  // namespace dk
