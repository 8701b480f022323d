/* precision.h — the CPU engine's compute precision, one setting per process.
 *
 * fp32 (the default) runs every convolution and linear layer in float32.
 * bf16 runs the convolutions (conv.h) and the big linear layers (ops.h
 * linear_forward/linear_backward) with bfloat16 inputs and weights and
 * float32 accumulation and outputs; callers' tensors stay float32 (the
 * engine converts on the way in), and norms, activations, attention and
 * losses stay float32.  bf16 pays off only where the CPU multiplies bf16
 * natively (AVX512_BF16 or AMX-BF16): "auto" picks it there and fp32
 * elsewhere.
 *
 * The setting is read at every layer call: set it once at start-up, or
 * between whole forward/backward passes, never while another thread is
 * inside one (a pass would mix precisions). */
#ifndef E2G_PRECISION_H
#define E2G_PRECISION_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum { E2G_PRECISION_FP32, E2G_PRECISION_BF16 } e2g_precision;

/* The process-wide setting; E2G_PRECISION_FP32 until changed.  Setting bf16
 * fails (returns −1, setting unchanged) when oneDNN has no optimised bf16
 * convolution on this CPU (pre-AVX-512 machines: only its reference code,
 * orders of magnitude slower); otherwise it returns 0.  Forcing bf16 on an
 * AVX-512 CPU without AVX512_BF16 is allowed (oneDNN emulates it; slower than
 * fp32, useful for checking numerics). */
int e2g_set_precision(e2g_precision p);
e2g_precision e2g_get_precision(void);

/* "fp32", "bf16" or "auto" (case-insensitive) → *out; "auto" resolves to
 * e2g_precision_native().  Returns 0, or −1 for anything else (NULL, "",
 * "fp16", …), leaving *out untouched. */
int e2g_precision_parse(const char *s, e2g_precision *out);

/* What the CLI and the server call at start: parses s as above, NULL or ""
 * reading $E2GAN_PRECISION (unset or "": auto), and sets it.  Returns 0,
 * or -1 with the reason in err (E2G_ERR_LEN bytes). */
int e2g_precision_setup(const char *s, char *err);

/* bf16 where the CPU has native bf16 multiplies (cpuid AVX512_BF16, or
 * AMX-BF16 with the OS enabling tile state) and oneDNN dispatches a bf16
 * ISA for them; fp32 elsewhere. */
e2g_precision e2g_precision_native(void);

/* The current setting for logs: "bf16 (amx)", "bf16 (avx512_bf16)",
 * "bf16 (emulated, avx512_core)", "fp32" or "fp32 (no native bf16)".
 * A static string. */
const char *e2g_precision_describe(void);

/* "fp32" or "bf16". */
const char *e2g_precision_name(e2g_precision p);

/* ---- bfloat16 conversion ------------------------------------------------- */

/* float32 → bfloat16 with round-to-nearest-even, as the CPU's VCVTNE2PS2BF16
 * does: denormal inputs become signed zeros, NaNs stay (quiet) NaNs, finite
 * values that round past the largest bf16 become infinities. */
static inline uint16_t e2g_bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float e2g_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* dst[i] = e2g_bf16_round(src[i]) for n values: AVX512-BF16 instructions
 * where the CPU has them, else a portable loop (same results); OpenMP
 * threads for large n.  dst and src must not overlap. */
void e2g_bf16_from_f32(uint16_t *dst, const float *src, size_t n);

/* The portable loop alone (tests compare the two). */
void e2g_bf16_from_f32_generic(uint16_t *dst, const float *src, size_t n);

/* 1 when this CPU has AVX512_BF16 (and the OS saves AVX-512 state). */
int e2g_cpu_has_avx512_bf16(void);

#endif
