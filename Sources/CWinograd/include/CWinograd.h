// Winograd F(4x4, 3x3) convolution (3x3 kernel, stride 1, padding 1) on float32 tensors in
// 16-channel blocks (oneDNN's nChw16c), single-threaded per call, AVX-512 only: the caller checks
// the CPU. Each output tile is computed by the same instructions in the same order wherever it
// sits in the batch, so an image's result does not depend on its neighbours, the batch size or
// how the tiles are split between threads.
#include <stddef.h>

/// Flags of `dd_winograd_forward`.
enum { DD_WINOGRAD_ACCUMULATE = 1, DD_WINOGRAD_RELU = 2 };

/// Floats of the transformed weights U[36][inChannels][outChannels].
size_t dd_winograd_weight_floats(int inChannels, int outChannels);

/// Transforms OIHW 3x3 weights into U = G g G^T, tile point by tile point.
void dd_winograd_transform_weights(const float *weights, int inChannels, int outChannels, float *transformed);

/// Tile blocks of a call (the units `part` of `parts` splits between threads).
int dd_winograd_blocks(int batch, int height, int width);

/// Floats of scratch one concurrent caller needs (64-byte aligned).
size_t dd_winograd_scratch_floats(int inChannels, int outChannels);

/// dst = conv(src) + bias (plus, with ACCUMULATE, residual's values, or dst's old ones where residual
/// is NULL; then max(0, .) with RELU) for the tile blocks of part `part` of `parts`; src, dst and
/// residual [batch][channels/16][height][width][16], channels multiples of 16, src, dst, residual,
/// transformed weights and scratch 64-byte aligned.
void dd_winograd_forward(const float *src, float *dst, const float *residual, const float *transformed, const float *bias,
                         int batch, int inChannels, int outChannels, int height, int width, int flags,
                         float *scratch, int part, int parts);
