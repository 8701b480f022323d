/* lowrank.h — SVD of a LoRA delta B·A and its best rank-k approximation,
 * used by the rank search (train.h). */
#ifndef E2G_LOWRANK_H
#define E2G_LOWRANK_H

/* B (cout × r), A (r × fan): B·A = U·diag(σ)·Vt with U (cout × r) and Vt
 * (r × fan) orthonormal on the returned numerical rank, σ descending
 * (zeros beyond the rank). */
int e2g_lowrank_svd(const float *B, const float *A, int cout, int r, int fan, float *sigma,
                    float *U, float *Vt);
/* The rank-k factors Bk (cout × k), Ak (k × fan) whose product is the best
 * rank-k approximation of B·A in the Frobenius norm (k ≤ r). */
void e2g_lowrank_truncate(const float *B, const float *A, int cout, int r, int fan, int k,
                          float *Bk, float *Ak);

#endif
