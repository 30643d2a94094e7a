// OpenBLAS's own cblas.h (found through pkg-config's include path) and the one
// LAPACK routine the project uses, which OpenBLAS exports with Fortran linkage.
#include <cblas.h>

/// Symmetric eigensolver (divide and conquer), float64, column-major.
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a,
             const int *lda, double *w, double *work, const int *lwork,
             int *iwork, const int *liwork, int *info);
