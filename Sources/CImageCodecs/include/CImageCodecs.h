#ifndef CIMAGECODECS_H
#define CIMAGECODECS_H

// A thin layer over libpng (classic API, for iTXt chunks) and libjpeg(-turbo)
// that encodes to and decodes from memory. Both libraries report errors by
// longjmp (libjpeg's default handler even calls exit()); these functions trap
// them with setjmp and return an error message instead. Every function returns
// 0 on success and -1 on failure with a NUL-terminated message in `err`.

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A growable byte buffer owned by C; release with cic_buffer_free.
typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
} cic_buffer;

void cic_buffer_free(cic_buffer *buffer);

/// One text entry: a PNG iTXt/tEXt/zTXt chunk, or a JPEG marker segment.
typedef struct {
    /// PNG: the keyword (Latin-1, 1-79 bytes). JPEG: unused (NULL).
    char *key;
    /// The payload bytes (UTF-8 text for PNG), `length` of them, NUL-terminated.
    unsigned char *value;
    size_t length;
    /// JPEG: the marker code (0xFE for COM, 0xE0 + n for APPn). PNG: 0.
    int marker;
} cic_text;

/// A decoded image: 8-bit samples, rows packed without padding.
typedef struct {
    unsigned char *pixels;
    int width;
    int height;
    int channels;
    cic_text *texts;
    int text_count;
    /// Warnings the decoder emitted (libjpeg treats corrupt data as warnings).
    int warnings;
} cic_image;

void cic_image_free(cic_image *image);

/// Encodes 8-bit grayscale (channels 1) or RGB (channels 3) pixels as PNG with
/// uncompressed iTXt chunks for the given keys and UTF-8 values.
int cic_png_encode(const unsigned char *pixels, int width, int height, int channels,
                   const char *const *keys, const char *const *values, int text_count,
                   cic_buffer *out, char *err, size_t err_len);

/// Decodes a PNG to 8-bit samples (palette expanded to RGB, 16-bit stripped,
/// low bit depths expanded) and collects its text chunks.
int cic_png_decode(const unsigned char *data, size_t size, cic_image *out,
                   char *err, size_t err_len);

/// Encodes 8-bit grayscale or RGB pixels as baseline JPEG at `quality` (1-100)
/// and writes each given marker segment (payload at most 65533 bytes) after the header.
int cic_jpeg_encode(const unsigned char *pixels, int width, int height, int channels,
                    int quality, const int *markers, const unsigned char *const *payloads,
                    const size_t *lengths, int marker_count,
                    cic_buffer *out, char *err, size_t err_len);

/// Decodes a JPEG to grayscale (1 channel) or RGB (3 channels) and collects its
/// COM and APPn segments. With `strict`, any decoder warning (corrupt data,
/// premature end) is an error.
int cic_jpeg_decode(const unsigned char *data, size_t size, int strict, cic_image *out,
                    char *err, size_t err_len);

/// Library versions, for the environment record.
const char *cic_png_version(void);
int cic_jpeg_version(void);

#ifdef __cplusplus
}
#endif

#endif
