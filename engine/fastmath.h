/* fastmath.h — exp, tanh, log and atanh that the compiler vectorises
 * (libm's are scalar calls): Cephes' expf and logf polynomials, relative
 * error ≈ 1e-7, and tanh and atanh built on them (absolute error below 1e-7
 * and 2e-7). */
#ifndef E2G_FASTMATH_H
#define E2G_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* e^t for t in [−87, 88] (callers clamp; below −87 the result is ≈ 1e-38). */
static inline float fast_exp_in_range(float t) {
    /* t = e·ln2 + r with e = round(t/ln2), by the 1.5·2²³ trick */
    const float e = (t * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = t - e * 0.693359375f + e * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t two_e_bits = ((int32_t)e + 127) << 23;
    float two_e;
    memcpy(&two_e, &two_e_bits, sizeof two_e);
    return p * two_e;
}

/* tanh(x) = sign(x)·(1 − e)/(1 + e) with e = exp(−2|x|) ∈ (0, 1]. */
static inline float fast_tanh(float x) {
    const float t = -2.0f * fabsf(x);
    const float e = fast_exp_in_range(t > -87.0f ? t : -87.0f); /* not fmaxf: a libm call */
    return copysignf((1.0f - e) / (1.0f + e), x);
}

/* ln(x) for normal x > 0: x = m·2^e with m in [√½, √2), ln m by Cephes' logf polynomial. */
static inline float fast_log(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 126; /* x = f·2^e, f in [0.5, 1) */
    bits = (bits & 0x007fffff) | 0x3f000000;
    float f;
    memcpy(&f, &bits, sizeof f);
    if (f < 0.707106781186547524f) {
        e -= 1;
        f = f + f - 1.0f;
    } else {
        f = f - 1.0f;
    }
    const float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = f * z * p;
    y += -2.12194440e-4f * (float)e;
    y += -0.5f * z;
    return f + y + 0.693359375f * (float)e;
}

/* atanh(x) = ½·ln((1 + x)/(1 − x)) for |x| < 1. */
static inline float fast_atanh(float x) { return 0.5f * fast_log((1.0f + x) / (1.0f - x)); }

#endif
