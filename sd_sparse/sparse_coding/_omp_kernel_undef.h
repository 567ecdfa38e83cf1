/* Clears the per-type macros between the float32 and float64 instantiations. */
#undef REAL
#undef FABS
#undef SQRT
#undef NAME
#undef VW
#undef VEC
#undef VLOAD
#undef VSTORE
#undef VSET1
#undef VZERO
#undef VFMA
#undef VFNMA
#undef VMUL
#undef VABS
#undef VMAX
#undef VEQMASK
