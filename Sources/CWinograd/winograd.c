// Winograd F(4x4, 3x3) on 16-channel blocks (see include/CWinograd.h). Per block of tiles:
// input transform V = B^T d B into scratch, 36 matrix products M = V U (one per tile point, the
// tiles as rows), output transform A^T M A with bias (and sum, relu) into dst. A block's V and M
// stay in L2 and each tile point's U in L1 while its rows stream by.
#include "CWinograd.h"
#include <immintrin.h>
#include <string.h>

#pragma clang attribute push(__attribute__((target("avx512f,fma"))), apply_to = function)

#define UNROLLED _Pragma("clang loop unroll(full)")

enum { MAX_ROWS = 36, ROW_STEP = 4, POINTS = 36 };

size_t dd_winograd_weight_floats(int inChannels, int outChannels) {
    return (size_t)POINTS * inChannels * outChannels;
}

size_t dd_winograd_scratch_floats(int inChannels, int outChannels) {
    return (size_t)POINTS * MAX_ROWS * (inChannels + outChannels);
}

void dd_winograd_transform_weights(const float *weights, int ic, int oc, float *U) {
    static const float G[6][3] = {
        {1.f / 4, 0, 0}, {-1.f / 6, -1.f / 6, -1.f / 6}, {-1.f / 6, 1.f / 6, -1.f / 6},
        {1.f / 24, 1.f / 12, 1.f / 6}, {1.f / 24, -1.f / 12, 1.f / 6}, {0, 0, 1}};
    for (int o = 0; o < oc; o++) {
        for (int i = 0; i < ic; i++) {
            const float *g = weights + ((size_t)o * ic + i) * 9;
            float t[6][3];
            for (int a = 0; a < 6; a++)
                for (int c = 0; c < 3; c++) t[a][c] = G[a][0] * g[c] + G[a][1] * g[3 + c] + G[a][2] * g[6 + c];
            for (int a = 0; a < 6; a++)
                for (int b = 0; b < 6; b++)
                    U[((size_t)(a * 6 + b) * ic + i) * oc + o] = t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2];
        }
    }
}

// Tiles per call, and how they are cut into blocks of at most MAX_ROWS rows (a multiple of ROW_STEP).
typedef struct { int tiles, tilesY, tilesX, blocks, rows; } Tiling;

static Tiling tiling(int batch, int height, int width) {
    Tiling t;
    t.tilesY = (height + 3) / 4; t.tilesX = (width + 3) / 4;
    t.tiles = batch * t.tilesY * t.tilesX;
    t.blocks = (t.tiles + MAX_ROWS - 1) / MAX_ROWS;
    int per = (t.tiles + t.blocks - 1) / t.blocks;
    t.rows = (per + ROW_STEP - 1) / ROW_STEP * ROW_STEP;
    return t;
}

int dd_winograd_blocks(int batch, int height, int width) { return tiling(batch, height, width).blocks; }

// r = B^T d for one column of six vectors.
static inline __attribute__((always_inline)) void input_rows(const __m512 d[6], __m512 r[6]) {
    const __m512 four = _mm512_set1_ps(4), five = _mm512_set1_ps(5), two = _mm512_set1_ps(2);
    r[0] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[2], _mm512_mul_ps(four, d[0])), d[4]);
    r[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
    r[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
    __m512 f = _mm512_sub_ps(d[4], d[2]), g = _mm512_sub_ps(d[3], d[1]);
    r[3] = _mm512_fmadd_ps(two, g, f);
    r[4] = _mm512_fnmadd_ps(two, g, f);
    r[5] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[3], _mm512_mul_ps(four, d[1])), d[5]);
}

// o = A^T m for one column of six vectors.
static inline __attribute__((always_inline)) void output_rows(const __m512 m[6], __m512 o[4]) {
    __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
    __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
    o[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
    o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2), d34, d12);
    o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4), s34, s12);
    o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8), d34, d12), m[5]);
}

// V[point][row][ic] for the block's first `active` rows (rows past the last tile are zero).
static void transform_input(const float *src, float *V, int first, int active, const Tiling *t, int ic, int h, int w) {
    const int icb = ic / 16, perImage = t->tilesY * t->tilesX;
    for (int r = 0; r < active; r++) {
        const int tile = first + r;
        if (tile >= t->tiles) {
            for (int p = 0; p < POINTS; p++) memset(V + ((size_t)p * t->rows + r) * ic, 0, (size_t)ic * 4);
            continue;
        }
        const int image = tile / perImage, within = tile % perImage;
        const int y0 = within / t->tilesX * 4 - 1, x0 = within % t->tilesX * 4 - 1;
        for (int cb = 0; cb < icb; cb++) {
            const float *plane = src + ((size_t)image * icb + cb) * h * w * 16;
            __m512 columns[6][6];
            UNROLLED for (int j = 0; j < 6; j++) {
                __m512 d[6], o[6];
                const int x = x0 + j;
                for (int i = 0; i < 6; i++) {
                    const int y = y0 + i;
                    d[i] = (y >= 0 && y < h && x >= 0 && x < w) ? _mm512_load_ps(plane + ((size_t)y * w + x) * 16) : _mm512_setzero_ps();
                }
                input_rows(d, o);
                for (int i = 0; i < 6; i++) columns[i][j] = o[i];
            }
            for (int i = 0; i < 6; i++) {
                __m512 o[6];
                input_rows(columns[i], o);
                for (int j = 0; j < 6; j++) _mm512_store_ps(V + ((size_t)(i * 6 + j) * t->rows + r) * ic + cb * 16, o[j]);
            }
        }
    }
}

// M[R rows][16 * COLS outputs from `column`] = V[R rows][ic] U[ic][...], summed over ic in order.
#define PRODUCT_KERNEL(NAME, R, COLS)                                                                   \
    static void NAME(const float *V, const float *U, float *M, int ic, int oc, int column) {           \
        __m512 acc[R][COLS];                                                                            \
        UNROLLED for (int r = 0; r < R; r++)                                                            \
            UNROLLED for (int k = 0; k < COLS; k++) acc[r][k] = _mm512_setzero_ps();                    \
        for (int i = 0; i < ic; i++) {                                                                  \
            __m512 u[COLS];                                                                             \
            UNROLLED for (int k = 0; k < COLS; k++) u[k] = _mm512_load_ps(U + (size_t)i * oc + column + 16 * k); \
            UNROLLED for (int r = 0; r < R; r++) {                                                      \
                const __m512 v = _mm512_set1_ps(V[(size_t)r * ic + i]);                                 \
                UNROLLED for (int k = 0; k < COLS; k++) acc[r][k] = _mm512_fmadd_ps(v, u[k], acc[r][k]); \
            }                                                                                           \
        }                                                                                               \
        UNROLLED for (int r = 0; r < R; r++)                                                            \
            UNROLLED for (int k = 0; k < COLS; k++) _mm512_store_ps(M + (size_t)r * oc + column + 16 * k, acc[r][k]); \
    }
PRODUCT_KERNEL(product_6x4, 6, 4)
PRODUCT_KERNEL(product_4x4, 4, 4)
PRODUCT_KERNEL(product_12x2, 12, 2)
PRODUCT_KERNEL(product_8x2, 8, 2)
PRODUCT_KERNEL(product_4x2, 4, 2)
PRODUCT_KERNEL(product_12x1, 12, 1)
PRODUCT_KERNEL(product_8x1, 8, 1)
PRODUCT_KERNEL(product_4x1, 4, 1)

// The `count` rows (a multiple of ROW_STEP) of the 36 products, V and M `stride` rows per tile
// point: the widest kernel while its rows fit, then one narrower for the rest. Every kernel sums a
// row's products in the same order, so a tile's result does not depend on the kernel it meets.
static void products(const float *V, const float *U, float *M, int stride, int count, int ic, int oc) {
    for (int p = 0; p < POINTS; p++) {
        const float *v = V + (size_t)p * stride * ic, *u = U + (size_t)p * ic * oc;
        float *m = M + (size_t)p * stride * oc;
#define ROWS(R) v + (size_t)(R) * ic, u, m + (size_t)(R) * oc, ic, oc, o
        int o = 0;
        for (; o + 64 <= oc; o += 64) {
            int r = 0;
            for (; r + 6 <= count && count - r != 8; r += 6) product_6x4(ROWS(r));   // 8 left: two 4s
            for (; r < count; r += 4) product_4x4(ROWS(r));
        }
        for (; o + 32 <= oc; o += 32) {
            int r = 0;
            for (; r + 12 <= count; r += 12) product_12x2(ROWS(r));
            if (count - r == 8) product_8x2(ROWS(r));
            else if (count - r == 4) product_4x2(ROWS(r));
        }
        for (; o + 16 <= oc; o += 16) {
            int r = 0;
            for (; r + 12 <= count; r += 12) product_12x1(ROWS(r));
            if (count - r == 8) product_8x1(ROWS(r));
            else if (count - r == 4) product_4x1(ROWS(r));
        }
#undef ROWS
    }
}

static void transform_output(const float *M, float *dst, const float *residual, const float *bias, int flags, int first,
                             const Tiling *t, int oc, int h, int w) {
    const int ocb = oc / 16, perImage = t->tilesY * t->tilesX;
    for (int r = 0; r < t->rows && first + r < t->tiles; r++) {
        const int tile = first + r, image = tile / perImage, within = tile % perImage;
        const int y0 = within / t->tilesX * 4, x0 = within % t->tilesX * 4;
        for (int cb = 0; cb < ocb; cb++) {
            const size_t planeOffset = ((size_t)image * ocb + cb) * h * w * 16;
            float *plane = dst + planeOffset;
            const float *addend = (residual ? residual : dst) + planeOffset;
            const __m512 b = bias ? _mm512_loadu_ps(bias + cb * 16) : _mm512_setzero_ps();
            __m512 columns[4][6];
            for (int j = 0; j < 6; j++) {
                __m512 m[6], o[4];
                for (int i = 0; i < 6; i++) m[i] = _mm512_load_ps(M + ((size_t)(i * 6 + j) * t->rows + r) * oc + cb * 16);
                output_rows(m, o);
                for (int i = 0; i < 4; i++) columns[i][j] = o[i];
            }
            for (int i = 0; i < 4 && y0 + i < h; i++) {
                __m512 o[4];
                output_rows(columns[i], o);
                for (int j = 0; j < 4 && x0 + j < w; j++) {
                    const size_t at = ((size_t)(y0 + i) * w + x0 + j) * 16;
                    __m512 v = _mm512_add_ps(o[j], b);
                    if (flags & DD_WINOGRAD_ACCUMULATE) v = _mm512_add_ps(v, _mm512_load_ps(addend + at));
                    if (flags & DD_WINOGRAD_RELU) v = _mm512_max_ps(v, _mm512_setzero_ps());
                    _mm512_store_ps(plane + at, v);
                }
            }
        }
    }
}

void dd_winograd_forward(const float *src, float *dst, const float *residual, const float *U, const float *bias,
                         int batch, int ic, int oc, int h, int w, int flags, float *scratch, int part, int parts) {
    const Tiling t = tiling(batch, h, w);
    float *V = scratch, *M = scratch + (size_t)POINTS * MAX_ROWS * ic;
    const int from = (int)((long)t.blocks * part / parts), to = (int)((long)t.blocks * (part + 1) / parts);
    for (int block = from; block < to; block++) {
        const int first = block * t.rows, tiles = t.tiles - first < t.rows ? t.tiles - first : t.rows;
        const int active = (tiles + ROW_STEP - 1) / ROW_STEP * ROW_STEP;
        transform_input(src, V, first, active, &t, ic, h, w);
        products(V, U, M, t.rows, active, ic, oc);
        transform_output(M, dst, residual, bias, flags, first, &t, oc, h, w);
    }
}

#pragma clang attribute pop
