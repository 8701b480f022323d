/* fastmath.h — exp and tanh that the compiler vectorises (libm's expf and
 * tanhf are scalar calls): Cephes' expf polynomial, relative error ≈ 1e-7,
 * and tanh built on it with an absolute error below 1e-7. */
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

#endif
