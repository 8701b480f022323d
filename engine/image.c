/* image.c — JPEG (TurboJPEG API of libjpeg-turbo 2.1), PNG (libpng 1.6) and
 * WebP (libwebp 1.2) decoding and encoding from memory, EXIF orientation,
 * and the pixel <-> tensor mapping with reflection padding.  Every size read
 * from a file is checked against the caller's pixel limit before pixels are
 * allocated. */
#include "image.h"

#include "common.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <webp/decode.h>
#include <webp/encode.h>

/* The most libpng may allocate for one chunk's data.  The decoder reads
 * only the chunks it needs (see decode_png), none of them large. */
#define PNG_CHUNK_MAX ((png_alloc_size_t)8 << 20)

static const uint8_t PNG_SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

void e2g_image_free(e2g_image *im) {
    if (!im) return;
    free(im->rgb);
    memset(im, 0, sizeof *im);
}

/* ---- the formats ------------------------------------------------------- */

static int is_jpeg(const uint8_t *buf, size_t n) { return n >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF; }

static int is_png(const uint8_t *buf, size_t n) {
    return n >= sizeof PNG_SIGNATURE && memcmp(buf, PNG_SIGNATURE, sizeof PNG_SIGNATURE) == 0;
}

static int is_webp(const uint8_t *buf, size_t n) {
    return n >= 12 && memcmp(buf, "RIFF", 4) == 0 && memcmp(buf + 8, "WEBP", 4) == 0;
}

const e2g_image_format_info e2g_image_formats[E2G_IMAGE_UNKNOWN] = {
    [E2G_IMAGE_JPEG] = {E2G_IMAGE_JPEG, "jpeg", "JPEG", "image/jpeg", {"jpg", "jpeg", NULL}, 1, is_jpeg},
    [E2G_IMAGE_PNG] = {E2G_IMAGE_PNG, "png", "PNG", "image/png", {"png", NULL, NULL}, 0, is_png},
    [E2G_IMAGE_WEBP] = {E2G_IMAGE_WEBP, "webp", "WebP", "image/webp", {"webp", NULL, NULL}, 1, is_webp},
};

const char *e2g_image_format_list(char *buf, size_t n, e2g_image_format_field field, const char *last_sep) {
    size_t used = 0;
    buf[0] = '\0';
    for (int f = 0; f < E2G_IMAGE_UNKNOWN && used < n; f++) {
        const e2g_image_format_info *info = &e2g_image_formats[f];
        const char *text = field == E2G_FORMAT_NAMES ? info->name : field == E2G_FORMAT_LABELS ? info->label : info->media_type;
        const char *sep = f == 0 ? "" : f == E2G_IMAGE_UNKNOWN - 1 ? last_sep : ", ";
        used += (size_t)snprintf(buf + used, n - used, "%s%s", sep, text);
    }
    return buf;
}

e2g_image_format e2g_image_sniff(const uint8_t *buf, size_t n) {
    for (int f = 0; f < E2G_IMAGE_UNKNOWN; f++)
        if (e2g_image_formats[f].detect(buf, n)) return (e2g_image_format)f;
    return E2G_IMAGE_UNKNOWN;
}

e2g_image_format e2g_image_format_from_name(const char *name) {
    for (int f = 0; f < E2G_IMAGE_UNKNOWN; f++) {
        if (strcasecmp(name, e2g_image_formats[f].name) == 0) return (e2g_image_format)f;
        for (const char *const *ext = e2g_image_formats[f].extensions; *ext; ext++)
            if (strcasecmp(name, *ext) == 0) return (e2g_image_format)f;
    }
    return E2G_IMAGE_UNKNOWN;
}

e2g_image_format e2g_image_format_from_media_type(const char *media_type) {
    for (int f = 0; f < E2G_IMAGE_UNKNOWN; f++)
        if (strcmp(media_type, e2g_image_formats[f].media_type) == 0) return (e2g_image_format)f;
    return E2G_IMAGE_UNKNOWN;
}

e2g_image_format e2g_image_format_from_path(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    return dot ? e2g_image_format_from_name(dot + 1) : E2G_IMAGE_UNKNOWN;
}

const char *e2g_image_media_type(e2g_image_format fmt) {
    return (unsigned)fmt < E2G_IMAGE_UNKNOWN ? e2g_image_formats[fmt].media_type : "application/octet-stream";
}

const char *e2g_image_extension(e2g_image_format fmt) {
    return (unsigned)fmt < E2G_IMAGE_UNKNOWN ? e2g_image_formats[fmt].extensions[0] : "bin";
}

/* Refuses empty sizes and sizes above the caller's pixel limit.  Widths and
 * heights are below 2^32, so the product cannot overflow 64 bits. */
static int check_size(int64_t w, int64_t h, long max_pixels, char *err) {
    if (w <= 0 || h <= 0)
        return e2g_fail(err, "image has an empty size (%lldx%lld)", (long long)w, (long long)h);
    if (w * h > (int64_t)max_pixels)
        return e2g_fail(err, "image of %lldx%lld pixels exceeds the limit of %ld pixels",
                        (long long)w, (long long)h, max_pixels);
    return 0;
}

static int check_quality(const char *codec, int quality, char *err) {
    if (quality < 1 || quality > 100)
        return e2g_fail(err, "%s quality %d is outside 1..100", codec, quality);
    return 0;
}

/* malloc'd w×h×3 bytes, or NULL with a message. */
static uint8_t *alloc_pixels(int w, int h, char *err) {
    size_t n;
    uint8_t *p = NULL;
    if (e2g_mul_size((size_t)w * 3, (size_t)h, &n) == 0) p = malloc(n);
    if (!p) e2g_fail(err, "out of memory for a %dx%d image", w, h);
    return p;
}

/* ---- EXIF orientation ---------------------------------------------------- */

static unsigned read_u16(const uint8_t *p, int big_endian) {
    return big_endian ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t read_u32(const uint8_t *p, int big_endian) {
    return big_endian ? (uint32_t)read_u16(p, 1) << 16 | read_u16(p + 2, 1)
                      : (uint32_t)read_u16(p + 2, 0) << 16 | read_u16(p, 0);
}

/* The Orientation tag (0x0112, one SHORT) of IFD0 in a TIFF structure of n
 * bytes; 1 when it is absent, malformed or out of range. */
static int tiff_orientation(const uint8_t *tiff, size_t n) {
    if (n < 8) return 1;
    int big_endian;
    if (tiff[0] == 'I' && tiff[1] == 'I')
        big_endian = 0;
    else if (tiff[0] == 'M' && tiff[1] == 'M')
        big_endian = 1;
    else
        return 1;
    if (read_u16(tiff + 2, big_endian) != 42) return 1;
    uint32_t ifd = read_u32(tiff + 4, big_endian);
    if (ifd > n - 2) return 1;
    size_t count = read_u16(tiff + ifd, big_endian);
    size_t room = (n - ifd - 2) / 12;
    if (count > room) count = room;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *entry = tiff + ifd + 2 + 12 * i;
        if (read_u16(entry, big_endian) != 0x0112) continue;
        if (read_u16(entry + 2, big_endian) != 3 || read_u32(entry + 4, big_endian) != 1) return 1;
        unsigned v = read_u16(entry + 8, big_endian);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Walks a JPEG's marker segments up to the first scan and returns the
 * orientation stored in the first APP1 "Exif" segment, 1 when there is none.
 * Never reads outside buf[0..n). */
static int jpeg_orientation(const uint8_t *buf, size_t n) {
    size_t pos = 2; /* after SOI */
    while (pos + 4 <= n) {
        if (buf[pos] != 0xFF) return 1;
        uint8_t marker = buf[pos + 1];
        if (marker == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (marker == 0xDA || marker == 0xD9) return 1; /* start of scan, end of image */
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { /* no length field */
            pos += 2;
            continue;
        }
        size_t len = (size_t)buf[pos + 2] << 8 | buf[pos + 3]; /* counts itself */
        if (len < 2 || len > n - pos - 2) return 1;
        const uint8_t *body = buf + pos + 4;
        size_t body_len = len - 2;
        if (marker == 0xE1 && body_len >= 6 && memcmp(body, "Exif\0\0", 6) == 0)
            return tiff_orientation(body + 6, body_len - 6);
        pos += 2 + len;
    }
    return 1;
}

/* Writes into dst the upright form of the w×h image src stored with EXIF
 * orientation 2..8; for 5..8 the result is h×w.  Each case gives the source
 * pixel index of output (0, 0) and how it moves per output step in x and y. */
static void apply_orientation(uint8_t *dst, const uint8_t *src, int w, int h, int orientation) {
    const ptrdiff_t W = w, H = h;
    ptrdiff_t base, dx, dy;
    switch (orientation) {
    case 2: base = W - 1;         dx = -1; dy = W;  break; /* mirrored */
    case 3: base = H * W - 1;     dx = -1; dy = -W; break; /* turned 180° */
    case 4: base = (H - 1) * W;   dx = 1;  dy = -W; break; /* flipped */
    case 5: base = 0;             dx = W;  dy = 1;  break; /* transposed */
    case 6: base = (H - 1) * W;   dx = -W; dy = 1;  break; /* to be turned 90° clockwise */
    case 7: base = H * W - 1;     dx = -W; dy = -1; break; /* transversed */
    case 8: base = W - 1;         dx = W;  dy = -1; break; /* to be turned 90° anticlockwise */
    default: E2G_ASSERT(!"orientation out of range"); return;
    }
    const int out_w = orientation >= 5 ? h : w, out_h = orientation >= 5 ? w : h;
    for (int y = 0; y < out_h; y++) {
        ptrdiff_t src_index = base + y * dy;
        uint8_t *out = dst + (size_t)y * out_w * 3;
        for (int x = 0; x < out_w; x++, src_index += dx) memcpy(out + 3 * x, src + 3 * src_index, 3);
    }
}

/* ---- JPEG ----------------------------------------------------------------- */

/* Reads a JPEG's header: its stored size and colour space.  For a stream
 * of tables without an image (or cut off before its frame header)
 * tjDecompressHeader3 succeeds without setting the size, hence the zeros. */
static int jpeg_header(tjhandle tj, const uint8_t *buf, size_t n, int *w, int *h, int *colorspace,
                       char *err) {
    int subsamp;
    *w = *h = 0;
    if (tjDecompressHeader3(tj, buf, n, w, h, &subsamp, colorspace) != 0)
        return e2g_fail(err, "JPEG: %s", tjGetErrorStr2(tj));
    if (*w <= 0 || *h <= 0) return e2g_fail(err, "JPEG: no image in the data");
    return 0;
}

static int probe_jpeg(const uint8_t *buf, size_t n, int *width, int *height, char *err) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return e2g_fail(err, "JPEG: %s", tjGetErrorStr2(NULL));
    int w, h, colorspace;
    int rc = jpeg_header(tj, buf, n, &w, &h, &colorspace, err);
    tjDestroy(tj);
    if (rc != 0) return -1;
    int turned = jpeg_orientation(buf, n) >= 5;
    *width = turned ? h : w;
    *height = turned ? w : h;
    return 0;
}

/* Decodes to RGB8 and applies the EXIF orientation.  TJFLAG_LIMITSCANS
 * refuses progressive files with an absurd number of scans (a CPU bomb);
 * decoder warnings such as a premature end of data make tjDecompress2 fail,
 * which is what a service wants from a truncated upload. */
static int decode_jpeg(e2g_image *out, const uint8_t *buf, size_t n, long max_pixels, char *err) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return e2g_fail(err, "JPEG: %s", tjGetErrorStr2(NULL));
    uint8_t *pixels = NULL;
    int w, h, colorspace;
    if (jpeg_header(tj, buf, n, &w, &h, &colorspace, err) != 0) goto err;
    if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
        e2g_fail(err, "JPEG: CMYK images are not supported");
        goto err;
    }
    if (check_size(w, h, max_pixels, err) != 0) goto err;
    if (!(pixels = alloc_pixels(w, h, err))) goto err;
    if (tjDecompress2(tj, buf, n, pixels, w, 0, h, TJPF_RGB, TJFLAG_LIMITSCANS) != 0) {
        e2g_fail(err, "JPEG: %s", tjGetErrorStr2(tj));
        goto err;
    }
    tjDestroy(tj);

    int orientation = jpeg_orientation(buf, n);
    if (orientation != 1) {
        uint8_t *upright = alloc_pixels(w, h, err);
        if (!upright) {
            free(pixels);
            return -1;
        }
        apply_orientation(upright, pixels, w, h, orientation);
        free(pixels);
        pixels = upright;
        if (orientation >= 5) {
            int t = w;
            w = h;
            h = t;
        }
    }
    *out = (e2g_image){.width = w, .height = h, .rgb = pixels};
    return 0;
err:
    tjDestroy(tj);
    free(pixels);
    return -1;
}

/* JPEG at the given quality; 4:4:4 chroma from quality 90 up (generated
 * images have sharp colour edges that 4:2:0 smears), 4:2:0 below. */
static int encode_jpeg(uint8_t **out, size_t *n, const e2g_image *im, int quality, char *err) {
    if (check_quality("JPEG", quality, err) != 0) return -1;
    if (im->width > 65535 || im->height > 65535)
        return e2g_fail(err, "a %dx%d image is too large for JPEG (65535 at most)", im->width,
                        im->height);
    int subsamp = quality >= 90 ? TJSAMP_444 : TJSAMP_420;
    unsigned long cap = tjBufSize(im->width, im->height, subsamp);
    unsigned char *jpeg = cap == (unsigned long)-1 ? NULL : malloc(cap);
    if (!jpeg) return e2g_fail(err, "out of memory encoding a %dx%d JPEG", im->width, im->height);
    tjhandle tj = tjInitCompress();
    if (!tj) {
        free(jpeg);
        return e2g_fail(err, "JPEG: %s", tjGetErrorStr2(NULL));
    }
    unsigned long size = cap;
    if (tjCompress2(tj, im->rgb, im->width, 0, im->height, TJPF_RGB, &jpeg, &size, subsamp,
                    quality, TJFLAG_NOREALLOC) != 0) {
        e2g_fail(err, "JPEG: %s", tjGetErrorStr2(tj));
        tjDestroy(tj);
        free(jpeg);
        return -1;
    }
    tjDestroy(tj);
    unsigned char *shrunk = realloc(jpeg, size); /* the worst-case buffer is much larger */
    *out = shrunk ? shrunk : jpeg;
    *n = size;
    return 0;
}

/* ---- PNG ------------------------------------------------------------------ */

/* libpng reports errors through these; the message goes to the caller's
 * error buffer (libpng's error pointer) instead of stderr. */
static void png_on_error(png_structp png, png_const_charp msg) {
    e2g_fail(png_get_error_ptr(png), "PNG: %s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

typedef struct {
    const uint8_t *buf;
    size_t n, pos;
} png_source;

static void png_read_memory(png_structp png, png_bytep dst, size_t len) {
    png_source *src = png_get_io_ptr(png);
    if (len > src->n - src->pos) png_error(png, "truncated data");
    memcpy(dst, src->buf + src->pos, len);
    src->pos += len;
}

/* The size from the IHDR chunk, which the PNG format requires first. */
static int probe_png(const uint8_t *buf, size_t n, int *width, int *height, char *err) {
    if (n < 24 || read_u32(buf + 8, 1) != 13 || memcmp(buf + 12, "IHDR", 4) != 0)
        return e2g_fail(err, "PNG: missing or truncated IHDR chunk");
    uint32_t w = read_u32(buf + 16, 1), h = read_u32(buf + 20, 1);
    if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff)
        return e2g_fail(err, "PNG: invalid size %ux%u", (unsigned)w, (unsigned)h);
    *width = (int)w;
    *height = (int)h;
    return 0;
}

/* Decodes any PNG colour type and bit depth to RGB8: palettes and low-depth
 * gray are expanded, 16-bit channels scaled (rounded), alpha stripped, gray
 * copied to three channels, Adam7 interlacing undone.  The pixel buffers are
 * volatile because the error path reaches them through longjmp. */
static int decode_png(e2g_image *out, const uint8_t *buf, size_t n, long max_pixels, char *err) {
    png_source src = {buf, n, 0};
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, err, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        return e2g_fail(err, "PNG: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) goto err;
    png_set_read_fn(png, &src, png_read_memory);
    png_set_chunk_malloc_max(png, PNG_CHUNK_MAX);
    /* Skip every chunk but IHDR, PLTE, tRNS, IDAT and IEND.  libpng 1.6.39
     * only warns when an ancillary chunk (text, ICC profile) is longer than
     * the cap above, then allocates its declared length: a 75-byte file
     * asked for 1.2 GB (found by fuzz_image: the regression input is
     * fuzz/corpus/image/regress-png-text-length-1.2g.png). */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_read_info(png, info);

    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (check_size(w, h, max_pixels, err) != 0) goto err;
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    /* palette_to_rgb turns a palette's tRNS into an alpha channel too */
    if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if (!(color & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) {
        e2g_fail(err, "PNG: unsupported pixel layout (color type %d, depth %d)", color, depth);
        goto err;
    }

    if (!(pixels = alloc_pixels((int)w, (int)h, err))) goto err;
    if (!(rows = malloc(h * sizeof *rows))) {
        e2g_fail(err, "PNG: out of memory");
        goto err;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *out = (e2g_image){.width = (int)w, .height = (int)h, .rgb = pixels};
    return 0;
err:
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(pixels);
    return -1;
}

/* A growing output buffer for libpng.  It lives on the heap so that the
 * error path after longjmp sees its current contents. */
typedef struct {
    uint8_t *data;
    size_t n, cap;
} png_sink;

static void png_write_memory(png_structp png, png_bytep data, size_t len) {
    png_sink *sink = png_get_io_ptr(png);
    if (len > sink->cap - sink->n) {
        size_t cap = sink->cap ? sink->cap : 4096;
        while (cap - sink->n < len) {
            if (cap > SIZE_MAX / 2) png_error(png, "output too large");
            cap *= 2;
        }
        uint8_t *grown = realloc(sink->data, cap);
        if (!grown) png_error(png, "out of memory");
        sink->data = grown;
        sink->cap = cap;
    }
    memcpy(sink->data + sink->n, data, len);
    sink->n += len;
}

static void png_flush_memory(png_structp png) { (void)png; }

static int encode_png(uint8_t **out, size_t *n, const e2g_image *im, char *err) {
    png_sink *sink = e2g_xcalloc(1, sizeof *sink);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        free(sink);
        return e2g_fail(err, "PNG: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(sink->data);
        free(sink);
        return -1;
    }
    png_set_write_fn(png, sink, png_write_memory, png_flush_memory);
    png_set_IHDR(png, info, im->width, im->height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < im->height; y++) png_write_row(png, im->rgb + (size_t)y * im->width * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = sink->data;
    *n = sink->n;
    free(sink);
    return 0;
}

/* ---- WebP ----------------------------------------------------------------- */

static const char *webp_status(VP8StatusCode st) {
    switch (st) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated data";
    default: return "corrupt data";
    }
}

/* The size and kind from the RIFF header and the first chunk (VP8, VP8L or
 * VP8X) alone; animations are refused. */
static int webp_features(const uint8_t *buf, size_t n, WebPBitstreamFeatures *f, char *err) {
    VP8StatusCode st = WebPGetFeatures(buf, n, f);
    if (st != VP8_STATUS_OK) return e2g_fail(err, "WebP: %s", webp_status(st));
    if (f->has_animation) return e2g_fail(err, "WebP: animated images are not supported");
    return 0;
}

static int probe_webp(const uint8_t *buf, size_t n, int *width, int *height, char *err) {
    WebPBitstreamFeatures f;
    if (webp_features(buf, n, &f, err) != 0) return -1;
    *width = f.width;
    *height = f.height;
    return 0;
}

/* Decodes lossy or lossless WebP straight into our RGB8 buffer (alpha is
 * dropped).  WebPDecode is given the whole file, so a RIFF size larger than
 * the data (a truncated upload) is an error, not a partial image. */
static int decode_webp(e2g_image *out, const uint8_t *buf, size_t n, long max_pixels, char *err) {
    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config)) return e2g_fail(err, "WebP: library version mismatch");
    if (webp_features(buf, n, &config.input, err) != 0) return -1;
    int w = config.input.width, h = config.input.height;
    if (check_size(w, h, max_pixels, err) != 0) return -1;
    uint8_t *pixels = alloc_pixels(w, h, err);
    if (!pixels) return -1;
    config.output.colorspace = MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = pixels;
    config.output.u.RGBA.stride = w * 3;
    config.output.u.RGBA.size = (size_t)w * h * 3;
    VP8StatusCode st = WebPDecode(buf, n, &config);
    if (st != VP8_STATUS_OK) {
        free(pixels);
        return e2g_fail(err, "WebP: %s", webp_status(st));
    }
    *out = (e2g_image){.width = w, .height = h, .rgb = pixels};
    return 0;
}

/* Lossy WebP at the given quality.  libwebp's buffer is copied into one of
 * ours so that the caller frees it with free() like the other formats. */
static int encode_webp(uint8_t **out, size_t *n, const e2g_image *im, int quality, char *err) {
    if (check_quality("WebP", quality, err) != 0) return -1;
    if (im->width > WEBP_MAX_DIMENSION || im->height > WEBP_MAX_DIMENSION)
        return e2g_fail(err, "a %dx%d image is too large for WebP (%d at most)", im->width,
                        im->height, WEBP_MAX_DIMENSION);
    uint8_t *webp = NULL;
    size_t size = WebPEncodeRGB(im->rgb, im->width, im->height, im->width * 3, (float)quality, &webp);
    uint8_t *copy = size ? malloc(size) : NULL;
    if (copy) memcpy(copy, webp, size);
    WebPFree(webp);
    if (!copy) return e2g_fail(err, "WebP: encoding a %dx%d image failed", im->width, im->height);
    *out = copy;
    *n = size;
    return 0;
}

/* ---- public entry points ------------------------------------------------- */

static int not_an_image(char *err) {
    char list[64];
    return e2g_fail(err, "not a %s image", e2g_image_format_list(list, sizeof list, E2G_FORMAT_LABELS, " or "));
}

int e2g_image_probe(const uint8_t *buf, size_t n, int *width, int *height, char *err) {
    switch (e2g_image_sniff(buf, n)) {
    case E2G_IMAGE_JPEG: return probe_jpeg(buf, n, width, height, err);
    case E2G_IMAGE_PNG: return probe_png(buf, n, width, height, err);
    case E2G_IMAGE_WEBP: return probe_webp(buf, n, width, height, err);
    default: return not_an_image(err);
    }
}

int e2g_image_decode(e2g_image *out, const uint8_t *buf, size_t n, long max_pixels, char *err) {
    memset(out, 0, sizeof *out);
    switch (e2g_image_sniff(buf, n)) {
    case E2G_IMAGE_JPEG: return decode_jpeg(out, buf, n, max_pixels, err);
    case E2G_IMAGE_PNG: return decode_png(out, buf, n, max_pixels, err);
    case E2G_IMAGE_WEBP: return decode_webp(out, buf, n, max_pixels, err);
    default: return not_an_image(err);
    }
}

int e2g_image_encode(uint8_t **out, size_t *n, const e2g_image *im, e2g_image_format fmt,
                     int quality, char *err) {
    *out = NULL;
    *n = 0;
    if (!im->rgb || im->width <= 0 || im->height <= 0)
        return e2g_fail(err, "cannot encode an empty image (%dx%d)", im->width, im->height);
    switch (fmt) {
    case E2G_IMAGE_JPEG: return encode_jpeg(out, n, im, quality, err);
    case E2G_IMAGE_PNG: return encode_png(out, n, im, err);
    case E2G_IMAGE_WEBP: return encode_webp(out, n, im, quality, err);
    default: return e2g_fail(err, "unknown output image format");
    }
}

int e2g_image_read_file(e2g_image *out, const char *path, long max_pixels, char *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return e2g_fail(err, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return e2g_fail(err, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return e2g_fail(err, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return e2g_fail(err, "%s: read error", path);
    }
    char why[E2G_ERR_LEN];
    int rc = e2g_image_decode(out, buf, n, max_pixels, why);
    free(buf);
    return rc == 0 ? 0 : e2g_fail(err, "%s: %s", path, why);
}

int e2g_image_write_file(const char *path, const e2g_image *im, int quality, char *err) {
    e2g_image_format fmt = e2g_image_format_from_path(path);
    if (fmt == E2G_IMAGE_UNKNOWN)
        return e2g_fail(err, "%s: unknown image extension (use .jpg, .jpeg, .png or .webp)", path);
    uint8_t *data;
    size_t n;
    char why[E2G_ERR_LEN];
    if (e2g_image_encode(&data, &n, im, fmt, quality, why) != 0)
        return e2g_fail(err, "%s: %s", path, why);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(data);
        return e2g_fail(err, "%s: %s", path, strerror(errno));
    }
    int ok = fwrite(data, 1, n, f) == n;
    int saved_errno = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved_errno = errno;
    }
    free(data);
    if (!ok) {
        remove(path);
        return e2g_fail(err, "%s: write failed: %s", path, strerror(saved_errno));
    }
    return 0;
}

/* ---- model-facing conversions -------------------------------------------- */

void e2g_image_pad_dims(int w, int h, int multiple, int *pw, int *ph) {
    E2G_ASSERT(multiple > 0 && w >= 0 && h >= 0);
    *pw = (w + multiple - 1) / multiple * multiple;
    *ph = (h + multiple - 1) / multiple * multiple;
}

void e2g_image_to_tensor(float *dst, const e2g_image *im, int pw, int ph) {
    const int w = im->width, h = im->height;
    E2G_ASSERT(w > 0 && h > 0 && pw >= w && ph >= h);
    float value[256]; /* p/127.5 − 1, computed once per pixel value */
    for (int p = 0; p < 256; p++) value[p] = p / 127.5f - 1.0f;
    for (int y = 0; y < ph; y++) {
        const uint8_t *row = im->rgb + (size_t)e2g_reflect_index(y, h) * w * 3;
        float *out = dst + (size_t)y * pw * 3; /* (pw, 3) */
        for (int i = 0; i < w * 3; i++) out[i] = value[row[i]];
        for (int x = w; x < pw; x++) {
            const uint8_t *p = row + (size_t)e2g_reflect_index(x, w) * 3;
            for (int c = 0; c < 3; c++) out[3 * x + c] = value[p[c]];
        }
    }
}

/* round((y + 1)·127.5) clamped to 0..255; lrintf rounds ties to even in the
 * default rounding mode, as torch.round does.  NaN fails both comparisons
 * and becomes 0. */
static uint8_t to_pixel(float y) {
    float v = (y + 1.0f) * 127.5f;
    if (!(v > 0.0f)) return 0;
    if (v >= 255.0f) return 255;
    return (uint8_t)lrintf(v);
}

void e2g_image_from_tensor(e2g_image *im, const float *src, int pw, int ph) {
    const int w = im->width, h = im->height;
    E2G_ASSERT(w > 0 && h > 0 && pw >= w && ph >= h);
    for (int y = 0; y < h; y++) {
        const float *in = src + (size_t)y * pw * 3; /* (pw, 3) */
        uint8_t *row = im->rgb + (size_t)y * w * 3;
        for (int i = 0; i < w * 3; i++) row[i] = to_pixel(in[i]);
    }
}

int e2g_image_pad(e2g_image_padded *p, const e2g_image *im, int multiple, char *err) {
    memset(p, 0, sizeof *p);
    int pw, ph;
    e2g_image_pad_dims(im->width, im->height, multiple, &pw, &ph);
    size_t n;
    if (e2g_mul_size((size_t)pw * ph, 3 * sizeof(float), &n))
        return e2g_fail(err, "image of %dx%d is too large", im->width, im->height);
    p->x = malloc(n), p->y = malloc(n);
    if (!p->x || !p->y) {
        e2g_image_padded_free(p);
        return e2g_fail(err, "not enough memory for a %dx%d image", im->width, im->height);
    }
    p->pw = pw, p->ph = ph;
    e2g_image_to_tensor(p->x, im, pw, ph);
    return 0;
}

void e2g_image_unpad(e2g_image *im, const e2g_image_padded *p) { e2g_image_from_tensor(im, p->y, p->pw, p->ph); }

void e2g_image_padded_free(e2g_image_padded *p) {
    free(p->x), free(p->y);
    memset(p, 0, sizeof *p);
}
