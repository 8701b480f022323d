/* precision.c — the process-wide compute precision (precision.h), CPU
 * feature detection for bf16 and the float32 → bfloat16 conversion.
 *
 * Detection asks two questions: does the CPU multiply bf16 natively (cpuid,
 * plus XCR0 for the OS saving the register state), and does oneDNN dispatch
 * an optimised bf16 convolution (dnnl_get_effective_cpu_isa and a probe
 * primitive whose implementation must not be oneDNN's reference code)?  Both
 * answers are computed once and cached. */
#include "precision.h"

#include "common.h"

#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>

static atomic_int g_precision = E2G_PRECISION_FP32;

/* ---- CPU features ---------------------------------------------------------- */

typedef struct {
    int avx512_bf16; /* AVX512_BF16 with the OS saving ZMM/opmask state */
    int amx_bf16;    /* AMX-BF16 + AMX-TILE with the OS enabling tile state */
    int dnnl_bf16;   /* oneDNN's effective ISA includes avx512_core_bf16 */
    int dnnl_amx;    /* oneDNN's effective ISA includes avx512_core_amx */
    int dnnl_avx512; /* oneDNN's effective ISA includes avx512_core */
    int probe_ok;    /* a bf16 convolution gets an optimised (non-"ref") kernel */
} cpu_caps;

static cpu_caps g_caps;
static pthread_once_t g_caps_once = PTHREAD_ONCE_INIT;

static unsigned long long read_xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect_cpu(cpu_caps *c) {
    unsigned a, b, cx, d;
    if (!__get_cpuid(1, &a, &b, &cx, &d) || !(cx & (1u << 27))) return; /* no OSXSAVE */
    unsigned long long xcr0 = read_xcr0();
    int os_avx512 = (xcr0 & 0xe6) == 0xe6;          /* SSE, AVX, opmask, ZMM state */
    int os_amx = (xcr0 & 0x60000) == 0x60000;       /* XTILECFG, XTILEDATA */
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, cx, d);
    int avx512f = (b >> 16) & 1, amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    unsigned max_sub = a;
    int avx512_bf16 = 0;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, cx, d);
        avx512_bf16 = (a >> 5) & 1;
    }
    c->avx512_bf16 = os_avx512 && avx512f && avx512_bf16;
    c->amx_bf16 = os_amx && amx_bf16 && amx_tile;
}

/* oneDNN's ISA values are nested bit masks: an ISA includes another when it
 * has all of its bits. */
static int isa_includes(dnnl_cpu_isa_t have, dnnl_cpu_isa_t want) {
    return ((unsigned)have & (unsigned)want) == (unsigned)want;
}

/* Builds (and frees) a small bf16-in, f32-out convolution and reports
 * whether oneDNN chose an optimised implementation for it. */
static int probe_bf16_conv(void) {
    dnnl_engine_t engine;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return 0;
    dnnl_dims_t src_dims = {1, 32, 16, 16}, w_dims = {32, 32, 3, 3}, dst_dims = {1, 32, 16, 16};
    dnnl_dims_t strides = {1, 1}, pad = {1, 1};
    dnnl_memory_desc_t src, w, dst;
    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    int ok = 0;
    if (dnnl_memory_desc_init_by_tag(&src, 4, src_dims, dnnl_bf16, dnnl_nhwc) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&w, 4, w_dims, dnnl_bf16, dnnl_format_tag_any) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&dst, 4, dst_dims, dnnl_f32, dnnl_nhwc) == dnnl_success &&
        dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct,
                                           &src, &w, NULL, &dst, strides, pad, pad) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL) == dnnl_success) {
        const char *impl = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
            ok = strncmp(impl, "ref", 3) != 0;
        dnnl_primitive_desc_destroy(pd);
    }
    dnnl_engine_destroy(engine);
    return ok;
}

static void caps_init(void) {
    detect_cpu(&g_caps);
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    g_caps.dnnl_avx512 = isa_includes(isa, dnnl_cpu_isa_avx512_core);
    g_caps.dnnl_bf16 = isa_includes(isa, dnnl_cpu_isa_avx512_core_bf16);
    g_caps.dnnl_amx = isa_includes(isa, dnnl_cpu_isa_avx512_core_amx);
    g_caps.probe_ok = probe_bf16_conv();
}

static const cpu_caps *caps(void) {
    pthread_once(&g_caps_once, caps_init);
    return &g_caps;
}

int e2g_cpu_has_avx512_bf16(void) {
    return caps()->avx512_bf16;
}

/* ---- the setting ------------------------------------------------------------ */

e2g_precision e2g_precision_native(void) {
    const cpu_caps *c = caps();
    int native = (c->amx_bf16 && c->dnnl_amx) || (c->avx512_bf16 && c->dnnl_bf16);
    return native && c->probe_ok ? E2G_PRECISION_BF16 : E2G_PRECISION_FP32;
}

int e2g_set_precision(e2g_precision p) {
    if (p != E2G_PRECISION_FP32 && p != E2G_PRECISION_BF16) return -1;
    if (p == E2G_PRECISION_BF16 && !caps()->probe_ok) return -1;
    atomic_store_explicit(&g_precision, p, memory_order_relaxed);
    return 0;
}

e2g_precision e2g_get_precision(void) {
    return (e2g_precision)atomic_load_explicit(&g_precision, memory_order_relaxed);
}

int e2g_precision_parse(const char *s, e2g_precision *out) {
    if (!s) return -1;
    if (!strcasecmp(s, "fp32"))
        *out = E2G_PRECISION_FP32;
    else if (!strcasecmp(s, "bf16"))
        *out = E2G_PRECISION_BF16;
    else if (!strcasecmp(s, "auto"))
        *out = e2g_precision_native();
    else
        return -1;
    return 0;
}

int e2g_precision_setup(const char *s, char *err) {
    if (!s || !*s) s = getenv("E2GAN_PRECISION");
    if (!s || !*s) s = "auto";
    e2g_precision p;
    if (e2g_precision_parse(s, &p)) return e2g_fail(err, "unknown precision '%s' (fp32, bf16 or auto)", s);
    if (e2g_set_precision(p))
        return e2g_fail(err, "bf16 was asked for, but oneDNN has no optimised bf16 convolution on this CPU");
    return 0;
}

const char *e2g_precision_name(e2g_precision p) {
    return p == E2G_PRECISION_BF16 ? "bf16" : "fp32";
}

const char *e2g_precision_describe(void) {
    const cpu_caps *c = caps();
    int native = e2g_precision_native() == E2G_PRECISION_BF16;
    if (e2g_get_precision() == E2G_PRECISION_FP32) return native ? "fp32" : "fp32 (no native bf16)";
    if (c->amx_bf16 && c->dnnl_amx) return "bf16 (amx)";
    if (native) return "bf16 (avx512_bf16)";
    return c->dnnl_avx512 ? "bf16 (emulated, avx512_core)" : "bf16 (emulated)";
}

/* ---- float32 → bfloat16 ----------------------------------------------------- */

void e2g_bf16_from_f32_generic(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = e2g_bf16_round(src[i]);
}

/* 32 values per VCVTNE2PS2BF16 (RNE, DAZ/FTZ — what e2g_bf16_round mirrors);
 * the tail through masked loads and stores. */
__attribute__((target("avx512bf16,avx512f,avx512bw"))) static void
bf16_from_f32_avx512(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        __m512bh r = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)r);
    }
    if (i < n) {
        size_t left = n - i;
        __mmask16 mlo = (__mmask16)(left >= 16 ? 0xffffu : (1u << left) - 1);
        __mmask16 mhi = (__mmask16)(left > 16 ? (1u << (left - 16)) - 1 : 0);
        __m512 lo = _mm512_maskz_loadu_ps(mlo, src + i), hi = _mm512_maskz_loadu_ps(mhi, src + i + 16);
        __m512bh r = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_mask_storeu_epi16(dst + i, (__mmask32)(((uint64_t)1 << left) - 1), (__m512i)r);
    }
}

#define CONVERT_CHUNK 16384 /* values per OpenMP work item (a multiple of 32) */

static void convert_span(int fast, uint16_t *dst, const float *src, size_t n) {
    if (fast)
        bf16_from_f32_avx512(dst, src, n);
    else
        e2g_bf16_from_f32_generic(dst, src, n);
}

/* Small conversions and those called from inside a parallel region (a row
 * of a padded copy) run on the calling thread without entering OpenMP: even
 * a one-thread nested region costs libgomp a team and futex wake-ups. */
void e2g_bf16_from_f32(uint16_t *dst, const float *src, size_t n) {
    int fast = e2g_cpu_has_avx512_bf16();
    size_t chunks = (n + CONVERT_CHUNK - 1) / CONVERT_CHUNK;
    if (chunks <= 4 || omp_in_parallel()) {
        convert_span(fast, dst, src, n);
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t i = c * CONVERT_CHUNK, m = n - i < CONVERT_CHUNK ? n - i : CONVERT_CHUNK;
        convert_span(fast, dst + i, src + i, m);
    }
}
