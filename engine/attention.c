/* attention.c — flash-attention forward and backward on the CPU.
 *
 * Work goes in tiles of BQ queries × BK keys of one head.  The forward keeps a
 * running row max m and denominator l per query (online softmax), rescales
 * the partial output when m grows, and saves lse = m + log l.  The backward
 * (FlashAttention-2) recomputes each tile's probabilities p = exp(s − lse)
 * and uses D = rowsum(dout∘out), so ds = p∘(dout·vᵀ − D).  It runs as two
 * race-free passes: one parallel over key blocks that owns dk and dv, one
 * parallel over query blocks that owns dq; each recomputes the tiles it
 * needs, which costs two extra products per tile (7 instead of 5) but
 * needs no atomics and no per-thread copy of dq, whose size would grow with
 * threads × tokens.  Heads are read in place through the leading dimension
 * C of oneDNN's row-major sgemm, which sees it is inside a parallel region
 * and runs on the calling thread.  Per-thread scratch is two BQ×BK tiles;
 * the only other buffers are D, (N, heads, Lq), and, when there are few key
 * blocks, partial dk/dv sums (see pass 1). */
#include "attention.h"

#include <math.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fastmath.h"

/* Tile sizes: a BQ×BK score tile (64 KiB) and its operands stay in L2. */
enum { BQ = 64, BK = 256 };

static int min_int(int a, int b) { return a < b ? a : b; }
static int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

/* Row-major c = alpha·op(a)·op(b) + beta·c (op per 'N'/'T'), m×n result.
 * Shapes come from this file, so a oneDNN error is a bug: abort. */
static void sgemm(char ta, char tb, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc) {
    dnnl_status_t st = dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    E2G_ASSERT(st == dnnl_success);
}

/* x[i] = exp(x[i] − shift) for i < n, where every x[i] − shift ≤ 88;
 * returns the sum of the results.  Cephes' expf polynomial (relative error
 * ≈ 1e-7) in loops the compiler vectorises, unlike libm's expf.  Arguments
 * are first clamped at −87, in a loop of their own: clamping inside the
 * main loop lets the compiler turn it into a branch, which blocks
 * vectorisation.  An exponent that would underflow gives ≈ 1e-38, not 0. */
static float exp_shifted(float *x, int n, float shift) {
    for (int i = 0; i < n; i++) {
        const float t = x[i] - shift;
        x[i] = t > -87.0f ? t : -87.0f;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) {
        x[i] = fast_exp_in_range(x[i]);
        sum += x[i];
    }
    return sum;
}

void e2g_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       int N, int Lq, int Lk, int C, int heads) {
    E2G_ASSERT(N > 0 && Lq > 0 && Lk > 0 && heads > 0 && C > 0 && C % heads == 0);
    const int d = C / heads, nqb = ceil_div(Lq, BQ);
    const float scale = 1.0f / sqrtf((float)d);
    const long tasks = (long)N * heads * nqb;

#pragma omp parallel
    {
        float *s = e2g_xmalloc(sizeof(float) * BQ * BK); /* scores, then probabilities */
        float m[BQ], l[BQ];                              /* running max and denominator */
#pragma omp for schedule(dynamic)
        for (long t = 0; t < tasks; t++) {
            const int qb = (int)(t % nqb), h = (int)(t / nqb % heads), n = (int)(t / nqb / heads);
            const int q0 = qb * BQ, bq = min_int(BQ, Lq - q0);
            const float *qt = q + ((size_t)n * Lq + q0) * C + (size_t)h * d;
            float *ot = out + ((size_t)n * Lq + q0) * C + (size_t)h * d; /* accumulates p·v */
            for (int i = 0; i < bq; i++) {
                m[i] = -INFINITY;
                l[i] = 0.0f;
                memset(ot + (size_t)i * C, 0, sizeof(float) * d);
            }
            for (int k0 = 0; k0 < Lk; k0 += BK) {
                const int bk = min_int(BK, Lk - k0);
                const float *kt = k + ((size_t)n * Lk + k0) * C + (size_t)h * d;
                const float *vt = v + ((size_t)n * Lk + k0) * C + (size_t)h * d;
                sgemm('N', 'T', bq, bk, d, scale, qt, C, kt, C, 0.0f, s, bk);
                for (int i = 0; i < bq; i++) {
                    float *row = s + (size_t)i * bk, mx = m[i];
#pragma omp simd reduction(max : mx)
                    for (int j = 0; j < bk; j++) mx = mx > row[j] ? mx : row[j];
                    const float rescale = expf(m[i] - mx); /* 0 on the first tile */
                    l[i] = l[i] * rescale + exp_shifted(row, bk, mx);
                    m[i] = mx;
                    if (rescale != 1.0f)
                        for (int c = 0; c < d; c++) ot[(size_t)i * C + c] *= rescale;
                }
                sgemm('N', 'N', bq, d, bk, 1.0f, s, bk, vt, C, 1.0f, ot, C);
            }
            for (int i = 0; i < bq; i++) {
                const float inv = 1.0f / l[i];
                for (int c = 0; c < d; c++) ot[(size_t)i * C + c] *= inv;
                lse[((size_t)n * heads + h) * Lq + q0 + i] = m[i] + logf(l[i]);
            }
        }
        free(s);
    }
}

/* Recomputes one bq×bk tile for the backward: p = exp(scale·qt·ktᵀ − lse)
 * (the forward's probabilities) and ds = p∘(dot·vtᵀ − D), the gradient of
 * the scores before the 1/√d scale.  qt, dot and kt, vt are row blocks of
 * one head with leading dimension C; lse_t and drow_t are the tile's bq
 * rows of lse and D; p and ds are bq×bk with leading dimension bk. */
static void backward_tile(float *p, float *ds, const float *qt, const float *dot, const float *kt,
                          const float *vt, const float *lse_t, const float *drow_t, int bq, int bk,
                          int d, int C, float scale) {
    sgemm('N', 'T', bq, bk, d, scale, qt, C, kt, C, 0.0f, p, bk);
    sgemm('N', 'T', bq, bk, d, 1.0f, dot, C, vt, C, 0.0f, ds, bk);
    for (int i = 0; i < bq; i++) {
        float *prow = p + (size_t)i * bk, *dsrow = ds + (size_t)i * bk;
        const float di = drow_t[i];
        exp_shifted(prow, bk, lse_t[i]);
        for (int j = 0; j < bk; j++) dsrow[j] = prow[j] * (dsrow[j] - di);
    }
}

void e2g_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v, const float *out,
                        const float *lse, int N, int Lq, int Lk, int C, int heads) {
    E2G_ASSERT(N > 0 && Lq > 0 && Lk > 0 && heads > 0 && C > 0 && C % heads == 0);
    const int d = C / heads, nqb = ceil_div(Lq, BQ), nkb = ceil_div(Lk, BK);
    const float scale = 1.0f / sqrtf((float)d);

    /* D = rowsum(dout∘out) per head, laid out as lse: (N, heads, Lq). */
    float *drow = e2g_xmalloc(sizeof(float) * N * heads * Lq);
#pragma omp parallel for
    for (long r = 0; r < (long)N * Lq; r++) {
        const int n = (int)(r / Lq), i = (int)(r % Lq);
        for (int h = 0; h < heads; h++) {
            const float *o = out + (size_t)r * C + (size_t)h * d, *g = dout + (size_t)r * C + (size_t)h * d;
            float acc = 0.0f;
            for (int c = 0; c < d; c++) acc += o[c] * g[c];
            drow[((size_t)n * heads + h) * Lq + i] = acc;
        }
    }

    /* Pass 1 owns dk and dv: one task per (sample, head, key block) loops
     * over the query blocks.  With fewer such tasks than threads (few keys,
     * as in cross-attention), each is split into `splits` ranges of query
     * blocks that accumulate into their own zeroed copy of dk and dv,
     * summed afterwards; since N·heads·nkb < threads, the copies take fewer
     * than 4·threads·BK·d floats. */
    const size_t kv_numel = (size_t)N * Lk * C;
    const long kv_tasks = (long)N * heads * nkb;
    const int threads = omp_get_max_threads();
    const int splits = kv_tasks >= threads ? 1 : min_int(nqb, ceil_div(threads, kv_tasks));
    float *partial = splits > 1 ? e2g_xcalloc((size_t)splits * 2 * kv_numel, sizeof(float)) : NULL;

#pragma omp parallel
    {
        float *p = e2g_xmalloc(sizeof(float) * BQ * BK), *ds = e2g_xmalloc(sizeof(float) * BQ * BK);
#pragma omp for schedule(dynamic)
        for (long t = 0; t < kv_tasks * splits; t++) {
            const int split = (int)(t % splits), kb = (int)(t / splits % nkb);
            const int h = (int)(t / splits / nkb % heads), n = (int)(t / splits / nkb / heads);
            const int k0 = kb * BK, bk = min_int(BK, Lk - k0);
            const size_t koff = ((size_t)n * Lk + k0) * C + (size_t)h * d;
            float *dkt = (partial ? partial + (size_t)split * 2 * kv_numel : dk) + koff;
            float *dvt = (partial ? partial + ((size_t)split * 2 + 1) * kv_numel : dv) + koff;
            const int qb_end = (int)((long)(split + 1) * nqb / splits);
            for (int qb = (int)((long)split * nqb / splits); qb < qb_end; qb++) {
                const int q0 = qb * BQ, bq = min_int(BQ, Lq - q0);
                const size_t qoff = ((size_t)n * Lq + q0) * C + (size_t)h * d;
                const size_t roff = ((size_t)n * heads + h) * Lq + q0;
                backward_tile(p, ds, q + qoff, dout + qoff, k + koff, v + koff, lse + roff,
                              drow + roff, bq, bk, d, C, scale);
                sgemm('T', 'N', bk, d, bq, 1.0f, p, bk, dout + qoff, C, 1.0f, dvt, C);
                sgemm('T', 'N', bk, d, bq, scale, ds, bk, q + qoff, C, 1.0f, dkt, C);
            }
        }
        free(p);
        free(ds);
    }
    if (partial) {
#pragma omp parallel for
        for (size_t i = 0; i < kv_numel; i++)
            for (int split = 0; split < splits; split++) {
                dk[i] += partial[(size_t)split * 2 * kv_numel + i];
                dv[i] += partial[((size_t)split * 2 + 1) * kv_numel + i];
            }
        free(partial);
    }

    /* Pass 2 owns dq: one task per (sample, head, query block) loops over
     * the key blocks. */
    const long q_tasks = (long)N * heads * nqb;
#pragma omp parallel
    {
        float *p = e2g_xmalloc(sizeof(float) * BQ * BK), *ds = e2g_xmalloc(sizeof(float) * BQ * BK);
#pragma omp for schedule(dynamic)
        for (long t = 0; t < q_tasks; t++) {
            const int qb = (int)(t % nqb), h = (int)(t / nqb % heads), n = (int)(t / nqb / heads);
            const int q0 = qb * BQ, bq = min_int(BQ, Lq - q0);
            const size_t qoff = ((size_t)n * Lq + q0) * C + (size_t)h * d;
            const size_t roff = ((size_t)n * heads + h) * Lq + q0;
            for (int k0 = 0; k0 < Lk; k0 += BK) {
                const int bk = min_int(BK, Lk - k0);
                const size_t koff = ((size_t)n * Lk + k0) * C + (size_t)h * d;
                backward_tile(p, ds, q + qoff, dout + qoff, k + koff, v + koff, lse + roff,
                              drow + roff, bq, bk, d, C, scale);
                sgemm('N', 'N', bq, d, bk, scale, ds, bk, k + koff, C, 1.0f, dq + qoff, C);
            }
        }
        free(p);
        free(ds);
    }
    free(drow);
}
