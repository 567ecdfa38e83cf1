/* Body of the fused Batch-OMP kernel for one floating-point type; included by _omp_kernel.c with
 * REAL, FABS, SQRT, NAME(x) and the SIMD macros (VW lanes of type VEC: VLOAD, VSTORE, VSET1,
 * VZERO, VFMA(a, b, c) = a*b + c, VFNMA(a, b, c) = c - a*b, VMUL, VABS, VMAX, VEQMASK) defined. */

static REAL NAME(hmax)(VEC v) {
  REAL lanes[VW];
  VSTORE(lanes, v);
  REAL best = 0;
  for (int u = 0; u < VW; ++u) best = lanes[u] > best ? lanes[u] : best;
  return best;
}

/* alpha = D x for one signal (D given transposed, Dt [L, K]); returns max |alpha|. Four
 * independent accumulators per block keep the FMA units busy. */
static REAL NAME(correlate)(const REAL *restrict x, const REAL *restrict Dt, int K, int L,
                            REAL *restrict alpha) {
  VEC m = VZERO();
  int k = 0;
  for (; k + 4 * VW <= K; k += 4 * VW) {
    VEC a0 = VZERO(), a1 = VZERO(), a2 = VZERO(), a3 = VZERO();
    for (int l = 0; l < L; ++l) {
      const VEC xl = VSET1(x[l]);
      const REAL *restrict row = Dt + (int64_t)l * K + k;
      a0 = VFMA(xl, VLOAD(row), a0);
      a1 = VFMA(xl, VLOAD(row + VW), a1);
      a2 = VFMA(xl, VLOAD(row + 2 * VW), a2);
      a3 = VFMA(xl, VLOAD(row + 3 * VW), a3);
    }
    VSTORE(alpha + k, a0);
    VSTORE(alpha + k + VW, a1);
    VSTORE(alpha + k + 2 * VW, a2);
    VSTORE(alpha + k + 3 * VW, a3);
    m = VMAX(m, VMAX(VMAX(VABS(a0), VABS(a1)), VMAX(VABS(a2), VABS(a3))));
  }
  REAL best = NAME(hmax)(m);
  for (; k < K; ++k) {
    REAL acc = 0;
    for (int l = 0; l < L; ++l) acc += x[l] * Dt[(int64_t)l * K + k];
    alpha[k] = acc;
    best = FABS(acc) > best ? FABS(acc) : best;
  }
  return best;
}

/* The new atom's orthonormal direction q_s, seen through every atom: u_s = D q_s =
 * (G[j] - sum_t w_t u_t) / d, with w_t = u_t[j]. Then alpha -= y_s u_s (the residual loses its
 * component along q_s). One pass over K; returns max |alpha|. */
static REAL NAME(project_out)(const REAL *restrict grow, const REAL *restrict U, const REAL *restrict w,
                              int s, REAL inv_d, REAL y_s, int K, REAL *restrict u_s,
                              REAL *restrict alpha) {
  VEC m = VZERO();
  const VEC vinv_d = VSET1(inv_d), vy = VSET1(y_s);
  int k = 0;
  for (; k + VW <= K; k += VW) {
    VEC acc = VLOAD(grow + k);
    for (int t = 0; t < s; ++t) acc = VFNMA(VSET1(w[t]), VLOAD(U + (int64_t)t * K + k), acc);
    acc = VMUL(acc, vinv_d);
    VSTORE(u_s + k, acc);
    const VEC a = VFNMA(vy, acc, VLOAD(alpha + k));
    VSTORE(alpha + k, a);
    m = VMAX(m, VABS(a));
  }
  REAL best = NAME(hmax)(m);
  for (; k < K; ++k) {
    REAL acc = grow[k];
    for (int t = 0; t < s; ++t) acc -= w[t] * U[(int64_t)t * K + k];
    acc *= inv_d;
    u_s[k] = acc;
    alpha[k] -= y_s * acc;
    best = FABS(alpha[k]) > best ? FABS(alpha[k]) : best;
  }
  return best;
}

/* max |alpha| over all K. */
static REAL NAME(max_abs)(const REAL *restrict alpha, int K) {
  VEC m = VZERO();
  int k = 0;
  for (; k + VW <= K; k += VW) m = VMAX(m, VABS(VLOAD(alpha + k)));
  REAL best = NAME(hmax)(m);
  for (; k < K; ++k) best = FABS(alpha[k]) > best ? FABS(alpha[k]) : best;
  return best;
}

/* First k with |alpha[k]| == best (numpy's argmax tie rule). */
static int NAME(find_first)(const REAL *restrict alpha, int K, REAL best) {
  const VEC b = VSET1(best);
  int k = 0;
  for (; k + VW <= K; k += VW) {
    const int mask = VEQMASK(VABS(VLOAD(alpha + k)), b);
    if (mask) return k + __builtin_ctz((unsigned)mask);
  }
  for (; k < K; ++k)
    if (FABS(alpha[k]) == best) return k;
  return 0;
}

/* Codes one signal x [L]; writes S indices and values. Scratch: alpha [K], U [S, K], linv [S, S],
 * y, w, gamma [S]. */
static void NAME(code_one)(const REAL *restrict x, const REAL *restrict Dt, const REAL *restrict G,
                           int K, int L, int S, REAL tol, REAL eps, REAL *restrict alpha,
                           REAL *restrict U, REAL *restrict linv, REAL *restrict y, REAL *restrict w,
                           REAL *restrict gamma, int64_t *restrict idx, REAL *restrict val) {
  REAL xn2 = 0;
  for (int l = 0; l < L; ++l) xn2 += x[l] * x[l];
  REAL best = NAME(correlate)(x, Dt, K, L, alpha); /* alpha: correlations of the residual */
  REAL res2 = xn2;
  int active = 0;
  for (int s = 0; s < S; ++s) {
    if (tol >= 0 && res2 <= tol) break;
    int j = NAME(find_first)(alpha, K, best);
    for (int t = 0; t < s; ++t)
      if (idx[t] == j) { /* only when the residual is ~0: exclude the support and look again */
        for (int u = 0; u < s; ++u) alpha[idx[u]] = 0;
        best = NAME(max_abs)(alpha, K);
        j = NAME(find_first)(alpha, K, best);
        break;
      }
    const REAL aj = alpha[j];
    if (!(aj * aj > eps * xn2)) break; /* nothing left to explain (also stops on NaN) */
    REAL ww = 0;
    for (int t = 0; t < s; ++t) { /* w = L^{-1} G[support, j] = (q_t . d_j)_t */
      w[t] = U[(int64_t)t * K + j];
      ww += w[t] * w[t];
    }
    const REAL dd = 1 - ww;
    if (!(dd > eps)) break; /* the atom is linearly dependent on the support */
    const REAL d = SQRT(dd);
    for (int u = 0; u < s; ++u) { /* new row of L^{-1}: [-w' L^{-1} / d, 1 / d] */
      REAL acc = 0;
      for (int t = u; t < s; ++t) acc += w[t] * linv[t * S + u];
      linv[s * S + u] = -acc / d;
    }
    linv[s * S + s] = 1 / d;
    y[s] = aj / d;
    idx[s] = j;
    active = s + 1;
    res2 -= y[s] * y[s];
    if (s + 1 < S && !(tol >= 0 && res2 <= tol)) {
      best = NAME(project_out)(G + (int64_t)j * K, U, w, s, 1 / d, y[s], K, U + (int64_t)s * K, alpha);
    }
  }
  for (int u = 0; u < active; ++u) { /* gamma = L^{-T} y */
    REAL acc = 0;
    for (int t = u; t < active; ++t) acc += y[t] * linv[t * S + u];
    gamma[u] = acc;
  }
  for (int s = 0; s < S; ++s) {
    val[s] = s < active ? gamma[s] : 0;
    if (s >= active) idx[s] = 0;
  }
}

typedef struct {
  const REAL *X, *Dt, *G;
  int64_t begin, end;
  int K, L, S;
  REAL tol, eps;
  int64_t *indices;
  REAL *values;
  int status;
} NAME(job);

static void *NAME(worker)(void *arg) {
  NAME(job) *job = (NAME(job) *)arg;
  const int K = job->K, L = job->L, S = job->S;
  REAL *scratch = (REAL *)malloc(sizeof(REAL) * ((size_t)(S + 1) * K + S * S + 3 * S));
  if (!scratch) {
    job->status = 1;
    return NULL;
  }
  REAL *alpha = scratch, *U = scratch + K, *linv = U + (size_t)S * K;
  REAL *y = linv + S * S, *w = y + S, *gamma = w + S;
  for (int64_t n = job->begin; n < job->end; ++n)
    NAME(code_one)(job->X + n * L, job->Dt, job->G, K, L, S, job->tol, job->eps, alpha, U,
                   linv, y, w, gamma, job->indices + n * S, job->values + n * S);
  free(scratch);
  job->status = 0;
  return NULL;
}

/* Entry point: X [N, L], Dt [L, K] (unit-norm atoms, transposed), G [K, K] = D D'.
 * tol < 0 disables the residual stopping rule. Returns 0 on success. */
int NAME(batch_omp)(const REAL *X, const REAL *Dt, const REAL *G, int64_t N, int K, int L, int S,
                    REAL tol, REAL eps, int64_t *indices, REAL *values, int num_threads) {
  if (num_threads < 1) num_threads = 1;
  if (num_threads > MAX_THREADS) num_threads = MAX_THREADS;
  if (N < (int64_t)num_threads * 256) num_threads = 1;
  NAME(job) jobs[MAX_THREADS];
  pthread_t threads[MAX_THREADS];
  int started[MAX_THREADS];
  for (int t = 0; t < num_threads; ++t) {
    NAME(job) job = {X, Dt, G, N * t / num_threads, N * (t + 1) / num_threads, K, L, S,
                     tol, eps, indices, values, 1};
    jobs[t] = job;
    started[t] = 0;
  }
  for (int t = 1; t < num_threads; ++t)
    started[t] = pthread_create(&threads[t], NULL, NAME(worker), &jobs[t]) == 0;
  NAME(worker)(&jobs[0]);
  for (int t = 1; t < num_threads; ++t) {
    if (started[t])
      pthread_join(threads[t], NULL);
    else
      NAME(worker)(&jobs[t]); /* no thread could be started: do its share here */
  }
  int status = 0;
  for (int t = 0; t < num_threads; ++t) status |= jobs[t].status;
  return status;
}
