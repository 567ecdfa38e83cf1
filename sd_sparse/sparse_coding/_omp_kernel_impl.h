/* Body of the fused Batch-OMP kernel for one floating-point type; included by _omp_kernel.c with
 * REAL, FABS, SQRT and NAME(x) defined. */

/* alpha0 = D x for one signal, D given transposed as Dt [L, K]; accumulates blocks in registers. */
static void NAME(correlate)(const REAL *x, const REAL *Dt, int K, int L, REAL *alpha0) {
  int k = 0;
  for (; k + BLOCK <= K; k += BLOCK) {
    REAL acc[BLOCK] = {0};
    for (int l = 0; l < L; ++l) {
      const REAL xl = x[l];
      const REAL *row = Dt + (int64_t)l * K + k;
      for (int u = 0; u < BLOCK; ++u) acc[u] += xl * row[u];
    }
    for (int u = 0; u < BLOCK; ++u) alpha0[k + u] = acc[u];
  }
  for (; k + LANES <= K; k += LANES) {
    REAL acc[LANES] = {0};
    for (int l = 0; l < L; ++l) {
      const REAL xl = x[l];
      const REAL *row = Dt + (int64_t)l * K + k;
      for (int u = 0; u < LANES; ++u) acc[u] += xl * row[u];
    }
    for (int u = 0; u < LANES; ++u) alpha0[k + u] = acc[u];
  }
  for (; k < K; ++k) {
    REAL acc = 0;
    for (int l = 0; l < L; ++l) acc += x[l] * Dt[(int64_t)l * K + k];
    alpha0[k] = acc;
  }
}

/* First index of max |alpha| (numpy's argmax tie rule). Two vectorisable passes: the maximum over
 * independent lanes, then the first block of LANES values that holds it. */
static int NAME(argmax_abs)(const REAL *alpha, int K) {
  REAL lane[LANES] = {0};
  int k = 0;
  for (; k + LANES <= K; k += LANES)
    for (int u = 0; u < LANES; ++u) {
      const REAL v = FABS(alpha[k + u]);
      lane[u] = v > lane[u] ? v : lane[u];
    }
  REAL best = 0;
  for (int u = 0; u < LANES; ++u) best = lane[u] > best ? lane[u] : best;
  for (int t = k; t < K; ++t) best = FABS(alpha[t]) > best ? FABS(alpha[t]) : best;
  for (k = 0; k + LANES <= K; k += LANES) {
    int hit = 0;
    for (int u = 0; u < LANES; ++u) hit |= FABS(alpha[k + u]) == best;
    if (hit) break;
  }
  for (; k < K; ++k)
    if (FABS(alpha[k]) == best) return k;
  return 0;
}

/* Codes one signal x [L]; writes S indices and values. Scratch: alpha0, alpha [K]; linv [S*S];
 * y, w, gamma [S]. */
static void NAME(code_one)(const REAL *x, const REAL *Dt, const REAL *G, int K, int L, int S,
                           REAL tol, REAL eps, REAL *alpha0, REAL *alpha, REAL *linv, REAL *y,
                           REAL *w, REAL *gamma, int64_t *idx, REAL *val) {
  REAL xn2 = 0;
  for (int l = 0; l < L; ++l) xn2 += x[l] * x[l];
  NAME(correlate)(x, Dt, K, L, alpha0);
  const REAL *corr = alpha0; /* correlations of the current residual with every atom */
  REAL res2 = xn2;
  int active = 0;
  for (int s = 0; s < S; ++s) {
    if (tol >= 0 && res2 <= tol) break;
    int j = NAME(argmax_abs)(corr, K);
    for (int t = 0; t < s; ++t)
      if (idx[t] == j) { /* only when the residual is ~0: exclude the support and look again */
        for (int u = 0; u < s; ++u) alpha[idx[u]] = 0;
        j = NAME(argmax_abs)(corr, K);
        break;
      }
    const REAL aj = corr[j];
    if (!(aj * aj > eps * xn2)) break; /* nothing left to explain (also stops on NaN) */
    REAL ww = 0;
    for (int t = 0; t < s; ++t) { /* w = L^{-1} G[support, j] */
      REAL acc = 0;
      for (int u = 0; u <= t; ++u) acc += linv[t * S + u] * G[idx[u] * (int64_t)K + j];
      w[t] = acc;
      ww += acc * acc;
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
    for (int u = 0; u <= s; ++u) { /* gamma = L^{-T} y */
      REAL acc = 0;
      for (int t = u; t <= s; ++t) acc += y[t] * linv[t * S + u];
      gamma[u] = acc;
    }
    if (s + 1 < S && !(tol >= 0 && res2 <= tol)) { /* alpha = alpha0 - G[:, support] gamma */
      memcpy(alpha, alpha0, sizeof(REAL) * (size_t)K);
      for (int u = 0; u <= s; ++u) {
        const REAL g = gamma[u];
        const REAL *grow = G + idx[u] * (int64_t)K;
        for (int k = 0; k < K; ++k) alpha[k] -= g * grow[k];
      }
      corr = alpha;
    }
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
  REAL *scratch = (REAL *)malloc(sizeof(REAL) * (size_t)(2 * K + S * S + 3 * S));
  if (!scratch) {
    job->status = 1;
    return NULL;
  }
  REAL *alpha0 = scratch, *alpha = scratch + K, *linv = scratch + 2 * K;
  REAL *y = linv + S * S, *w = y + S, *gamma = w + S;
  for (int64_t n = job->begin; n < job->end; ++n)
    NAME(code_one)(job->X + n * L, job->Dt, job->G, K, L, S, job->tol, job->eps, alpha0, alpha,
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
