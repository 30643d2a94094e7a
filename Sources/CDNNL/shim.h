// oneDNN 2.x C API (Debian libdnnl-dev; no pkg-config file), the few OpenMP
// entry points the engine shares with oneDNN's thread pool, small helpers
// that hide fixed-size C arrays (dnnl_dims_t) from Swift, a software
// prefetch (Swift has no prefetch of its own) for a primitive's weights, and
// AVX512-BF16's float32 -> bfloat16 conversion (Swift has no bfloat16 type).
#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stddef.h>

/// libgomp's entry point behind `#pragma omp parallel`: runs fn(data) on a team.
void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
int omp_get_thread_num(void);
int omp_get_num_threads(void);
int omp_get_max_threads(void);
void omp_set_num_threads(int n);
int omp_get_level(void);

static const int kDNNLArgSrc = DNNL_ARG_SRC;
static const int kDNNLArgDst = DNNL_ARG_DST;
static const int kDNNLArgWeights = DNNL_ARG_WEIGHTS;
static const int kDNNLArgBias = DNNL_ARG_BIAS;
static const int kDNNLArgScratchpad = DNNL_ARG_SCRATCHPAD;
static const int kDNNLArgDiffSrc = DNNL_ARG_DIFF_SRC;
static const int kDNNLArgDiffDst = DNNL_ARG_DIFF_DST;

/// A memory descriptor of up to four dimensions with a data type and a format tag.
static inline dnnl_status_t dd_memory_desc_typed(dnnl_memory_desc_t *md, int ndims,
        int64_t d0, int64_t d1, int64_t d2, int64_t d3, dnnl_data_type_t type, dnnl_format_tag_t tag) {
    dnnl_dims_t dims = {d0, d1, d2, d3};
    return dnnl_memory_desc_init_by_tag(md, ndims, dims, type, tag);
}

/// A float32 memory descriptor of up to four dimensions with a format tag.
static inline dnnl_status_t dd_memory_desc(dnnl_memory_desc_t *md, int ndims,
        int64_t d0, int64_t d1, int64_t d2, int64_t d3, dnnl_format_tag_t tag) {
    return dd_memory_desc_typed(md, ndims, d0, d1, d2, d3, dnnl_f32, tag);
}

/// A 2-D direct convolution descriptor (forward inference/training or backward data).
static inline dnnl_status_t dd_convolution_desc(dnnl_convolution_desc_t *desc,
        dnnl_prop_kind_t prop, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *src,
        const dnnl_memory_desc_t *weights, const dnnl_memory_desc_t *bias,
        const dnnl_memory_desc_t *dst, int64_t stride, int64_t pad) {
    dnnl_dims_t strides = {stride, stride};
    dnnl_dims_t padding = {pad, pad};
    if (prop == dnnl_backward_data)
        return dnnl_convolution_backward_data_desc_init(desc, alg,
                src, weights, dst, strides, padding, padding);
    return dnnl_convolution_forward_desc_init(desc, prop, alg,
            src, weights, bias, dst, strides, padding, padding);
}

/// Asks the core to bring `bytes` bytes at `p` towards its L2 cache (software prefetch).
static inline void dd_prefetch(const void *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)p + o, 0, 2);
}

/// Rounds `vectors` x 16 floats at `src` to bfloat16 (nearest even: vcvtneps2bf16, the instruction
/// oneDNN's own conversions use) and stores vector i's 16 values at `dst + i * stride`. Only for
/// CPUs with AVX512-BF16 (flag avx512_bf16).
__attribute__((target("avx512f,avx512bf16")))
static inline void dd_store_bfloat16(const float *src, size_t vectors, uint16_t *dst, size_t stride) {
    for (size_t i = 0; i < vectors; i++) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + 16 * i));
        __builtin_memcpy(dst + i * stride, &h, 32);
    }
}
