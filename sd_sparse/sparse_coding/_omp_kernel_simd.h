/* Scalar stand-ins for the SIMD macros where no vector unit was selected (one lane). */
#ifndef VW
#define VW 1
#define VEC REAL
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSET1(x) ((REAL)(x))
#define VZERO() ((REAL)0)
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VFNMA(a, b, c) ((c) - (a) * (b))
#define VMUL(a, b) ((a) * (b))
#define VABS(v) FABS(v)
#define VMAX(a, b) ((a) > (b) ? (a) : (b))
#define VEQMASK(a, b) ((a) == (b))
#endif
