/*
 * Fused Batch-OMP (Rubinstein, Zibulevsky & Elad 2008) for the CPU.
 *
 * Each signal is coded start to finish while its working set (alpha0, alpha: 2K values) stays in
 * L1: alpha0 = D x, then S rounds of  argmax |alpha|  ->  progressive Cholesky row  ->
 * gamma = G_tt^{-1} alpha0_t  ->  alpha = alpha0 - G[:, t] gamma.  The inverse Cholesky factor
 * L^{-1} is grown one row per round, so no triangular solve is needed:
 *     w = L^{-1} G[t, j],  d = sqrt(1 - w'w),  y_s = alpha_j / d,
 *     row_s(L^{-1}) = [-w' L^{-1} / d, 1/d],  gamma = L^{-T} y,  ||r||^2 = ||x||^2 - y'y.
 * Atoms must be unit-norm rows of D (the Python wrapper normalises them). Signals are split over
 * POSIX threads. _native.py compiles this file on first use; the body for each floating-point
 * type is in _omp_kernel_impl.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 256
#define BLOCK 64 /* atoms accumulated in registers while correlating */
#define LANES 16 /* independent lanes of the argmax */

#define REAL float
#define FABS fabsf
#define SQRT sqrtf
#define NAME(x) x##_f32
#include "_omp_kernel_impl.h"
#undef REAL
#undef FABS
#undef SQRT
#undef NAME

#define REAL double
#define FABS fabs
#define SQRT sqrt
#define NAME(x) x##_f64
#include "_omp_kernel_impl.h"
