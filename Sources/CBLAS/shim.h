// OpenBLAS's own cblas.h (found through pkg-config's include path) and the one
// LAPACK routine the project uses, which OpenBLAS exports with Fortran linkage.
#include <cblas.h>

/// Symmetric eigensolver (divide and conquer), float64, column-major.
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a,
             const int *lda, double *w, double *work, const int *lwork,
             int *iwork, const int *liwork, int *info);

/// The x86-64 CPUID and XCR0 words the engine's kernel selection reads (all zero elsewhere).
typedef struct {
    unsigned leaf1_ecx, leaf7_ebx, leaf7_ecx, leaf7_edx, leaf7_1_eax;
    unsigned long long xcr0;
} diffusiond_cpu_words;

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static inline diffusiond_cpu_words diffusiond_read_cpu_words(void) {
    diffusiond_cpu_words r = {0, 0, 0, 0, 0, 0};
    unsigned a, b, c, d;
    unsigned max_leaf = __get_cpuid_max(0, 0);
    if (max_leaf >= 1 && __get_cpuid(1, &a, &b, &c, &d)) r.leaf1_ecx = c;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        r.leaf7_ebx = b; r.leaf7_ecx = c; r.leaf7_edx = d;
        if (a >= 1) { __cpuid_count(7, 1, a, b, c, d); r.leaf7_1_eax = a; }
    }
    if (r.leaf1_ecx & (1u << 27)) { /* OSXSAVE: the OS saves the extended registers */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        r.xcr0 = ((unsigned long long)hi << 32) | lo;
    }
    return r;
}
/// The SSE control word of the calling thread, and a setter (MXCSR).
static inline unsigned diffusiond_get_mxcsr(void) { unsigned r; __asm__ volatile("stmxcsr %0" : "=m"(r)); return r; }
static inline void diffusiond_set_mxcsr(unsigned r) { __asm__ volatile("ldmxcsr %0" : : "m"(r)); }
#else
static inline unsigned diffusiond_get_mxcsr(void) { return 0; }
static inline void diffusiond_set_mxcsr(unsigned r) { (void)r; }
static inline diffusiond_cpu_words diffusiond_read_cpu_words(void) {
    diffusiond_cpu_words r = {0, 0, 0, 0, 0, 0};
    return r;
}
#endif
