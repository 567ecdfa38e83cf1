/*
 * Fused Batch-OMP (Rubinstein, Zibulevsky & Elad 2008) for the CPU.
 *
 * Each signal is coded start to finish while its working set stays in L1: alpha = D x (the
 * residual's correlation with every atom), then S rounds of
 *     j = argmax |alpha|,  w_t = u_t[j],  d = sqrt(1 - w'w),  y_s = alpha_j / d,
 *     u_s = (G[j] - sum_t w_t u_t) / d,   alpha -= y_s u_s,
 * where u_t = D q_t is the t-th orthonormalised support direction seen through every atom, so
 * each round reads one Gram row and no triangular solve is needed. The inverse Cholesky factor
 * of G[support, support] grows one row per round ([-w' L^{-1} / d, 1/d]) and gives the
 * coefficients gamma = L^{-T} y at the end; ||r||^2 = ||x||^2 - y'y drives the `tol` rule.
 * Atoms must be unit-norm rows of D (the Python wrapper normalises them). Signals are split over
 * POSIX threads. Hot loops use AVX2/FMA intrinsics where the compiler targets them, and plain C
 * (one lane) elsewhere. _native.py compiles this file on first use; the body for each
 * floating-point type is in _omp_kernel_impl.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 256

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HAVE_AVX2 1
#endif

/* float32 */
#define REAL float
#define FABS fabsf
#define SQRT sqrtf
#define NAME(x) x##_f32
#ifdef HAVE_AVX2
#define VW 8
#define VEC __m256
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VFMA _mm256_fmadd_ps
#define VFNMA _mm256_fnmadd_ps
#define VMUL _mm256_mul_ps
#define VABS(v) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), (v))
#define VMAX _mm256_max_ps
#define VEQMASK(a, b) _mm256_movemask_ps(_mm256_cmp_ps((a), (b), _CMP_EQ_OQ))
#endif
#include "_omp_kernel_simd.h"
#include "_omp_kernel_impl.h"
#include "_omp_kernel_undef.h"

/* float64 */
#define REAL double
#define FABS fabs
#define SQRT sqrt
#define NAME(x) x##_f64
#ifdef HAVE_AVX2
#define VW 4
#define VEC __m256d
#define VLOAD _mm256_loadu_pd
#define VSTORE _mm256_storeu_pd
#define VSET1 _mm256_set1_pd
#define VZERO _mm256_setzero_pd
#define VFMA _mm256_fmadd_pd
#define VFNMA _mm256_fnmadd_pd
#define VMUL _mm256_mul_pd
#define VABS(v) _mm256_andnot_pd(_mm256_set1_pd(-0.0), (v))
#define VMAX _mm256_max_pd
#define VEQMASK(a, b) _mm256_movemask_pd(_mm256_cmp_pd((a), (b), _CMP_EQ_OQ))
#endif
#include "_omp_kernel_simd.h"
#include "_omp_kernel_impl.h"
#include "_omp_kernel_undef.h"
