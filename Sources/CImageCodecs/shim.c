// libpng and libjpeg report fatal errors by longjmp; Swift cannot call setjmp,
// so every call into either library that can fail lives here, behind setjmp.
// State that must survive a longjmp lives in heap structures, never in locals
// that change after setjmp.

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <png.h>
#include <jpeglib.h>

#include "CImageCodecs.h"

static void set_err(char *err, size_t err_len, const char *msg) {
    if (err && err_len > 0) {
        snprintf(err, err_len, "%s", msg ? msg : "unknown error");
    }
}

void cic_buffer_free(cic_buffer *buffer) {
    if (!buffer) return;
    free(buffer->data);
    buffer->data = NULL;
    buffer->size = 0;
    buffer->capacity = 0;
}

static int buffer_append(cic_buffer *b, const unsigned char *bytes, size_t n) {
    if (b->size + n > b->capacity) {
        size_t cap = b->capacity ? b->capacity : 4096;
        while (cap < b->size + n) cap *= 2;
        unsigned char *p = realloc(b->data, cap);
        if (!p) return -1;
        b->data = p;
        b->capacity = cap;
    }
    memcpy(b->data + b->size, bytes, n);
    b->size += n;
    return 0;
}

static void free_texts(cic_text *texts, int count) {
    if (!texts) return;
    for (int i = 0; i < count; i++) {
        free(texts[i].key);
        free(texts[i].value);
    }
    free(texts);
}

void cic_image_free(cic_image *image) {
    if (!image) return;
    free(image->pixels);
    free_texts(image->texts, image->text_count);
    memset(image, 0, sizeof *image);
}

static int add_text(cic_image *image, const char *key, const unsigned char *value, size_t length, int marker) {
    cic_text *t = realloc(image->texts, sizeof(cic_text) * (size_t)(image->text_count + 1));
    if (!t) return -1;
    image->texts = t;
    cic_text *e = &t[image->text_count];
    memset(e, 0, sizeof *e);
    if (key) {
        e->key = strdup(key);
        if (!e->key) return -1;
    }
    e->value = malloc(length + 1);
    if (!e->value) { free(e->key); e->key = NULL; return -1; }
    if (length) memcpy(e->value, value, length);
    e->value[length] = 0;
    e->length = length;
    e->marker = marker;
    image->text_count += 1;
    return 0;
}

const char *cic_png_version(void) { return PNG_LIBPNG_VER_STRING; }
int cic_jpeg_version(void) { return JPEG_LIB_VERSION; }

// MARK: - PNG

typedef struct {
    char message[256];
    cic_buffer *out;
    const unsigned char *in;
    size_t in_size;
    size_t in_pos;
    png_bytep *rows;
    png_textp text;
} png_state;

static void png_error_fn(png_structp png, png_const_charp msg) {
    png_state *st = png_get_error_ptr(png);
    if (st) snprintf(st->message, sizeof st->message, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warning_fn(png_structp png, png_const_charp msg) {
    (void)png; (void)msg;
}

static void png_write_fn(png_structp png, png_bytep data, png_size_t length) {
    png_state *st = png_get_io_ptr(png);
    if (buffer_append(st->out, data, length) != 0) png_error(png, "out of memory");
}

static void png_flush_fn(png_structp png) { (void)png; }

static void png_read_fn(png_structp png, png_bytep data, png_size_t length) {
    png_state *st = png_get_io_ptr(png);
    if (st->in_size - st->in_pos < length) png_error(png, "unexpected end of PNG data");
    memcpy(data, st->in + st->in_pos, length);
    st->in_pos += length;
}

int cic_png_encode(const unsigned char *pixels, int width, int height, int channels,
                   const char *const *keys, const char *const *values, int text_count,
                   cic_buffer *out, char *err, size_t err_len) {
    if (!pixels || width <= 0 || height <= 0 || (channels != 1 && channels != 3) || !out) {
        set_err(err, err_len, "invalid arguments: need width, height > 0 and 1 or 3 channels");
        return -1;
    }
    png_state *st = calloc(1, sizeof *st);
    if (!st) { set_err(err, err_len, "out of memory"); return -1; }
    st->out = out;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, st, png_error_fn, png_warning_fn);
    if (!png) { free(st); set_err(err, err_len, "png_create_write_struct failed"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        free(st);
        set_err(err, err_len, "png_create_info_struct failed");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        set_err(err, err_len, st->message[0] ? st->message : "libpng error");
        png_destroy_write_struct(&png, &info);
        free(st->rows);
        free(st->text);
        cic_buffer_free(out);
        free(st);
        return -1;
    }
    png_set_write_fn(png, st, png_write_fn, png_flush_fn);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (text_count > 0) {
        st->text = calloc((size_t)text_count, sizeof(png_text));
        if (!st->text) png_error(png, "out of memory");
        for (int i = 0; i < text_count; i++) {
            st->text[i].compression = PNG_ITXT_COMPRESSION_NONE;
            st->text[i].key = (png_charp)keys[i];
            st->text[i].text = (png_charp)values[i];
            st->text[i].itxt_length = strlen(values[i]);
            st->text[i].lang = NULL;
            st->text[i].lang_key = NULL;
        }
        png_set_text(png, info, st->text, text_count);
    }
    st->rows = malloc(sizeof(png_bytep) * (size_t)height);
    if (!st->rows) png_error(png, "out of memory");
    size_t stride = (size_t)width * (size_t)channels;
    for (int y = 0; y < height; y++) st->rows[y] = (png_bytep)(pixels + (size_t)y * stride);
    png_write_info(png, info);
    png_write_image(png, st->rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(st->rows);
    free(st->text);
    free(st);
    return 0;
}

static void collect_png_text(png_structp png, png_infop info, cic_image *out) {
    png_textp text = NULL;
    int n = 0;
    if (png_get_text(png, info, &text, &n) > 0) {
        for (int i = 0; i < n; i++) {
            size_t len = text[i].compression == PNG_ITXT_COMPRESSION_NONE ||
                         text[i].compression == PNG_ITXT_COMPRESSION_zTXt
                         ? text[i].itxt_length : text[i].text_length;
            if (add_text(out, text[i].key, (const unsigned char *)text[i].text, len, 0) != 0) {
                png_error(png, "out of memory");
            }
        }
    }
}

int cic_png_decode(const unsigned char *data, size_t size, cic_image *out,
                   char *err, size_t err_len) {
    if (!data || !out) { set_err(err, err_len, "invalid arguments"); return -1; }
    memset(out, 0, sizeof *out);
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        set_err(err, err_len, "not a PNG file (bad signature)");
        return -1;
    }
    png_state *st = calloc(1, sizeof *st);
    if (!st) { set_err(err, err_len, "out of memory"); return -1; }
    st->in = data;
    st->in_size = size;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st, png_error_fn, png_warning_fn);
    if (!png) { free(st); set_err(err, err_len, "png_create_read_struct failed"); return -1; }
    png_infop info = png_create_info_struct(png);
    png_infop end_info = png_create_info_struct(png);
    if (!info || !end_info) {
        png_destroy_read_struct(&png, info ? &info : NULL, NULL);
        free(st);
        set_err(err, err_len, "png_create_info_struct failed");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        set_err(err, err_len, st->message[0] ? st->message : "libpng error");
        png_destroy_read_struct(&png, &info, &end_info);
        free(st->rows);
        cic_image_free(out);
        free(st);
        return -1;
    }
    png_set_read_fn(png, st, png_read_fn);
    png_set_user_limits(png, 1 << 16, 1 << 16);
    png_read_info(png, info);
    png_uint_32 width = png_get_image_width(png, info);
    png_uint_32 height = png_get_image_height(png, info);
    int color = png_get_color_type(png, info);
    int depth = png_get_bit_depth(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (depth == 16) png_set_strip_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)width * (size_t)channels) png_error(png, "unexpected row layout");
    out->pixels = malloc(rowbytes * height);
    st->rows = malloc(sizeof(png_bytep) * height);
    if (!out->pixels || !st->rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++) st->rows[y] = out->pixels + (size_t)y * rowbytes;
    png_read_image(png, st->rows);
    png_read_end(png, end_info);
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    collect_png_text(png, info, out);
    collect_png_text(png, end_info, out);
    png_destroy_read_struct(&png, &info, &end_info);
    free(st->rows);
    free(st);
    return 0;
}

// MARK: - JPEG

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warnings;
} jpeg_err_state;

static void jpeg_error_exit_fn(j_common_ptr cinfo) {
    jpeg_err_state *e = (jpeg_err_state *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->message);
    longjmp(e->jump, 1);
}

static void jpeg_emit_message_fn(j_common_ptr cinfo, int level) {
    jpeg_err_state *e = (jpeg_err_state *)cinfo->err;
    if (level < 0) {
        // A warning: corrupt data and the like. Keep the first one.
        if (e->warnings == 0) (*cinfo->err->format_message)(cinfo, e->message);
        e->warnings += 1;
        cinfo->err->num_warnings += 1;
    }
}

static void jpeg_output_message_fn(j_common_ptr cinfo) { (void)cinfo; }

typedef struct {
    struct jpeg_compress_struct cinfo;
    jpeg_err_state err;
    unsigned char *mem;
    unsigned long mem_size;
} jpeg_enc_state;

int cic_jpeg_encode(const unsigned char *pixels, int width, int height, int channels,
                    int quality, const int *markers, const unsigned char *const *payloads,
                    const size_t *lengths, int marker_count,
                    cic_buffer *out, char *err, size_t err_len) {
    if (!pixels || width <= 0 || height <= 0 || width > 65500 || height > 65500 ||
        (channels != 1 && channels != 3) || !out) {
        set_err(err, err_len, "invalid arguments: need 1-65500 pixels a side and 1 or 3 channels");
        return -1;
    }
    if (quality < 1 || quality > 100) {
        set_err(err, err_len, "quality must be between 1 and 100");
        return -1;
    }
    for (int i = 0; i < marker_count; i++) {
        if (lengths[i] > 65533) { set_err(err, err_len, "marker segment longer than 65533 bytes"); return -1; }
    }
    jpeg_enc_state *st = calloc(1, sizeof *st);
    if (!st) { set_err(err, err_len, "out of memory"); return -1; }
    st->cinfo.err = jpeg_std_error(&st->err.pub);
    st->err.pub.error_exit = jpeg_error_exit_fn;
    st->err.pub.emit_message = jpeg_emit_message_fn;
    st->err.pub.output_message = jpeg_output_message_fn;
    if (setjmp(st->err.jump)) {
        set_err(err, err_len, st->err.message[0] ? st->err.message : "libjpeg error");
        jpeg_destroy_compress(&st->cinfo);
        free(st->mem);
        free(st);
        return -1;
    }
    jpeg_CreateCompress(&st->cinfo, JPEG_LIB_VERSION, sizeof(struct jpeg_compress_struct));
    jpeg_mem_dest(&st->cinfo, &st->mem, &st->mem_size);
    st->cinfo.image_width = (JDIMENSION)width;
    st->cinfo.image_height = (JDIMENSION)height;
    st->cinfo.input_components = channels;
    st->cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&st->cinfo);
    jpeg_set_quality(&st->cinfo, quality, TRUE);
    jpeg_start_compress(&st->cinfo, TRUE);
    for (int i = 0; i < marker_count; i++) {
        jpeg_write_marker(&st->cinfo, markers[i], payloads[i], (unsigned int)lengths[i]);
    }
    size_t stride = (size_t)width * (size_t)channels;
    while (st->cinfo.next_scanline < st->cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)st->cinfo.next_scanline * stride);
        jpeg_write_scanlines(&st->cinfo, &row, 1);
    }
    jpeg_finish_compress(&st->cinfo);
    jpeg_destroy_compress(&st->cinfo);
    memset(out, 0, sizeof *out);
    out->data = st->mem;
    out->size = st->mem_size;
    out->capacity = st->mem_size;
    free(st);
    return 0;
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_err_state err;
} jpeg_dec_state;

int cic_jpeg_decode(const unsigned char *data, size_t size, int strict, cic_image *out,
                    char *err, size_t err_len) {
    if (!data || !out) { set_err(err, err_len, "invalid arguments"); return -1; }
    memset(out, 0, sizeof *out);
    if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) {
        set_err(err, err_len, "not a JPEG file (no SOI marker)");
        return -1;
    }
    jpeg_dec_state *st = calloc(1, sizeof *st);
    if (!st) { set_err(err, err_len, "out of memory"); return -1; }
    st->cinfo.err = jpeg_std_error(&st->err.pub);
    st->err.pub.error_exit = jpeg_error_exit_fn;
    st->err.pub.emit_message = jpeg_emit_message_fn;
    st->err.pub.output_message = jpeg_output_message_fn;
    if (setjmp(st->err.jump)) {
        set_err(err, err_len, st->err.message[0] ? st->err.message : "libjpeg error");
        jpeg_destroy_decompress(&st->cinfo);
        cic_image_free(out);
        free(st);
        return -1;
    }
    jpeg_CreateDecompress(&st->cinfo, JPEG_LIB_VERSION, sizeof(struct jpeg_decompress_struct));
    jpeg_mem_src(&st->cinfo, data, (unsigned long)size);
    jpeg_save_markers(&st->cinfo, JPEG_COM, 0xFFFF);
    for (int m = 0; m < 16; m++) jpeg_save_markers(&st->cinfo, JPEG_APP0 + m, 0xFFFF);
    jpeg_read_header(&st->cinfo, TRUE);
    if (st->cinfo.image_width > 65500 || st->cinfo.image_height > 65500) {
        snprintf(st->err.message, sizeof st->err.message, "image too large");
        longjmp(st->err.jump, 1);
    }
    st->cinfo.out_color_space = st->cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&st->cinfo);
    int channels = st->cinfo.output_components;
    size_t stride = (size_t)st->cinfo.output_width * (size_t)channels;
    out->pixels = malloc(stride * st->cinfo.output_height);
    if (!out->pixels) {
        snprintf(st->err.message, sizeof st->err.message, "out of memory");
        longjmp(st->err.jump, 1);
    }
    while (st->cinfo.output_scanline < st->cinfo.output_height) {
        JSAMPROW row = out->pixels + (size_t)st->cinfo.output_scanline * stride;
        jpeg_read_scanlines(&st->cinfo, &row, 1);
    }
    for (jpeg_saved_marker_ptr m = st->cinfo.marker_list; m; m = m->next) {
        if (add_text(out, NULL, m->data, m->data_length, m->marker) != 0) {
            snprintf(st->err.message, sizeof st->err.message, "out of memory");
            longjmp(st->err.jump, 1);
        }
    }
    jpeg_finish_decompress(&st->cinfo);
    out->width = (int)st->cinfo.output_width;
    out->height = (int)st->cinfo.output_height;
    out->channels = channels;
    out->warnings = st->err.warnings;
    if (strict && st->err.warnings > 0) {
        set_err(err, err_len, st->err.message[0] ? st->err.message : "corrupt JPEG data");
        jpeg_destroy_decompress(&st->cinfo);
        cic_image_free(out);
        free(st);
        return -1;
    }
    jpeg_destroy_decompress(&st->cinfo);
    free(st);
    return 0;
}
