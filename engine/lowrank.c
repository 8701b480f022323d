/* lowrank.c — best rank-k approximations of a LoRA delta ΔW = B·A
 * (Eckart–Young), for the rank search.  Everything reduces to eigen-
 * decompositions of r×r Gram matrices (r is a LoRA rank, ≤ a few dozen),
 * done with cyclic Jacobi rotations in double. */
#include "lowrank.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Eigen-decomposition of a symmetric n×n matrix S (row-major, destroyed):
 * eigenvalues in w (descending), eigenvectors in the columns of V. */
static void sym_eigen(double *S, int n, double *w, double *V) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) V[i * n + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) off += S[p * n + q] * S[p * n + q];
        if (off < 1e-30) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = S[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (S[q * n + q] - S[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) { /* S ← S·J, then Jᵀ·S */
                    double skp = S[k * n + p], skq = S[k * n + q];
                    S[k * n + p] = c * skp - s * skq, S[k * n + q] = s * skp + c * skq;
                }
                for (int k = 0; k < n; k++) {
                    double spk = S[p * n + k], sqk = S[q * n + k];
                    S[p * n + k] = c * spk - s * sqk, S[q * n + k] = s * spk + c * sqk;
                }
                for (int k = 0; k < n; k++) {
                    double vkp = V[k * n + p], vkq = V[k * n + q];
                    V[k * n + p] = c * vkp - s * vkq, V[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++) w[i] = S[i * n + i];
    for (int i = 0; i < n; i++) { /* selection sort, descending, columns along */
        int best = i;
        for (int j = i + 1; j < n; j++)
            if (w[j] > w[best]) best = j;
        double tw = w[i];
        w[i] = w[best], w[best] = tw;
        for (int k = 0; k < n; k++) {
            double tv = V[k * n + i];
            V[k * n + i] = V[k * n + best], V[k * n + best] = tv;
        }
    }
}

int e2g_lowrank_svd(const float *B, const float *A, int cout, int r, int fan, float *sigma,
                    float *U, float *Vt) {
    /* A = Va·Λ^{1/2}·Q with orthonormal rows Q; then C = B·Va·Λ^{1/2} and
     * C = P·Σ·Ucᵀ gives B·A = P·Σ·(Ucᵀ·Q). */
    double *G = e2g_xcalloc((size_t)r * r, sizeof(double)), *lam = e2g_xmalloc(r * sizeof(double));
    double *Va = e2g_xmalloc((size_t)r * r * sizeof(double));
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int f = 0; f < fan; f++) s += (double)A[(size_t)i * fan + f] * A[(size_t)j * fan + f];
            G[i * r + j] = s;
        }
    sym_eigen(G, r, lam, Va);
    double top = lam[0] > 0 ? lam[0] : 0;
    int rank = 0;
    while (rank < r && lam[rank] > top * 1e-12 && lam[rank] > 0) rank++;
    /* C (cout × rank) = B·Va·Λ^{1/2} */
    double *C = e2g_xcalloc((size_t)cout * (rank ? rank : 1), sizeof(double));
    for (int o = 0; o < cout; o++)
        for (int k = 0; k < rank; k++) {
            double s = 0;
            for (int i = 0; i < r; i++) s += (double)B[(size_t)o * r + i] * Va[i * r + k];
            C[(size_t)o * rank + k] = s * sqrt(lam[k]);
        }
    double *CtC = e2g_xcalloc((size_t)(rank ? rank : 1) * (rank ? rank : 1), sizeof(double));
    double *s2 = e2g_xmalloc((rank ? rank : 1) * sizeof(double));
    double *Uc = e2g_xmalloc((size_t)(rank ? rank : 1) * (rank ? rank : 1) * sizeof(double));
    for (int i = 0; i < rank; i++)
        for (int j = 0; j < rank; j++) {
            double s = 0;
            for (int o = 0; o < cout; o++) s += C[(size_t)o * rank + i] * C[(size_t)o * rank + j];
            CtC[i * rank + j] = s;
        }
    if (rank) sym_eigen(CtC, rank, s2, Uc);
    memset(sigma, 0, r * sizeof(float));
    memset(U, 0, (size_t)cout * r * sizeof(float));
    memset(Vt, 0, (size_t)r * fan * sizeof(float));
    for (int k = 0; k < rank; k++) {
        double sk = sqrt(s2[k] > 0 ? s2[k] : 0);
        sigma[k] = (float)sk;
        if (sk <= 0) continue;
        for (int o = 0; o < cout; o++) { /* P = C·Uc / σ */
            double s = 0;
            for (int i = 0; i < rank; i++) s += C[(size_t)o * rank + i] * Uc[i * rank + k];
            U[(size_t)o * r + k] = (float)(s / sk);
        }
        /* row k of Ucᵀ·Q, Q = Λ^{-1/2}·Vaᵀ·A */
        double *coef = e2g_xcalloc(r, sizeof(double));
        for (int j = 0; j < rank; j++)
            for (int i = 0; i < r; i++) coef[i] += Uc[j * rank + k] * Va[i * r + j] / sqrt(lam[j]);
        for (int f = 0; f < fan; f++) {
            double s = 0;
            for (int i = 0; i < r; i++) s += coef[i] * A[(size_t)i * fan + f];
            Vt[(size_t)k * fan + f] = (float)s;
        }
        free(coef);
    }
    free(G), free(lam), free(Va), free(C), free(CtC), free(s2), free(Uc);
    return rank;
}

void e2g_lowrank_truncate(const float *B, const float *A, int cout, int r, int fan, int k,
                          float *Bk, float *Ak) {
    float *sigma = e2g_xmalloc(r * sizeof(float)), *U = e2g_xmalloc((size_t)cout * r * sizeof(float));
    float *Vt = e2g_xmalloc((size_t)r * fan * sizeof(float));
    e2g_lowrank_svd(B, A, cout, r, fan, sigma, U, Vt);
    /* split Σ evenly: Bk = U·√Σ, Ak = √Σ·Vᵀ (balanced factors train well) */
    for (int o = 0; o < cout; o++)
        for (int j = 0; j < k; j++) Bk[(size_t)o * k + j] = U[(size_t)o * r + j] * sqrtf(sigma[j]);
    for (int j = 0; j < k; j++)
        for (int f = 0; f < fan; f++) Ak[(size_t)j * fan + f] = Vt[(size_t)j * fan + f] * sqrtf(sigma[j]);
    free(sigma), free(U), free(Vt);
}
