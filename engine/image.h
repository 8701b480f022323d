/* image.h — decoding and encoding of JPEG, PNG and WebP images, and the mapping
 * between 8-bit RGB pixels and the generator's float tensors
 * (docs/architecture.md §1).  Decoders treat their input as hostile: sizes are
 * checked against a pixel limit before any pixel memory is allocated, and
 * truncated or corrupt data is an error message, never a crash. */
#ifndef E2G_IMAGE_H
#define E2G_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Interleaved RGB8, row-major, no padding between rows: pixel (x, y)
 * channel c is rgb[(y * width + x) * 3 + c].  The image owns rgb. */
typedef struct {
    int width, height;
    uint8_t *rgb; /* (height, width, 3) */
} e2g_image;

typedef enum { E2G_IMAGE_JPEG, E2G_IMAGE_PNG, E2G_IMAGE_WEBP, E2G_IMAGE_UNKNOWN } e2g_image_format;

/* The image formats, one row each, indexed by e2g_image_format: every list
 * of accepted formats (the decoder's sniffing, file names, the server's
 * media types and messages, the dataset loader's file names) reads it.
 * static/app.js keeps its own copy of the names and media types (see the
 * comment there). */
typedef struct {
    e2g_image_format fmt;
    const char *name;          /* "jpeg": the ?format= value */
    const char *label;         /* "JPEG", for messages */
    const char *media_type;    /* "image/jpeg" */
    const char *extensions[3]; /* without the dot, the usual one first; NULL-ended */
    int lossy;                 /* encoding takes a quality */
    /* whether buf starts with the format's magic bytes */
    int (*detect)(const uint8_t *buf, size_t n);
} e2g_image_format_info;

extern const e2g_image_format_info e2g_image_formats[E2G_IMAGE_UNKNOWN];

typedef enum { E2G_FORMAT_NAMES, E2G_FORMAT_LABELS, E2G_FORMAT_MEDIA_TYPES } e2g_image_format_field;

/* One field of every format, in table order, joined by ", " and last_sep
 * before the last ("jpeg, png or webp" for E2G_FORMAT_NAMES, " or ") into
 * buf of n bytes; returns buf. */
const char *e2g_image_format_list(char *buf, size_t n, e2g_image_format_field field, const char *last_sep);

/* Releases im->rgb and zeroes *im; safe on a zeroed or already freed image. */
void e2g_image_free(e2g_image *im);

/* The format of an encoded image, judged by its magic bytes only. */
e2g_image_format e2g_image_sniff(const uint8_t *buf, size_t n);

/* The format a name or file extension stands for (jpeg, jpg, png, webp),
 * case-insensitive; E2G_IMAGE_UNKNOWN for anything else. */
e2g_image_format e2g_image_format_from_name(const char *name);

/* The format of a media type ("image/png"; exact, lowercase, no
 * parameters); E2G_IMAGE_UNKNOWN for anything else. */
e2g_image_format e2g_image_format_from_media_type(const char *media_type);

/* The format an output path asks for by its extension (.jpg, .jpeg, .png,
 * .webp, case-insensitive); E2G_IMAGE_UNKNOWN for anything else. */
e2g_image_format e2g_image_format_from_path(const char *path);

/* The media type of a format ("image/jpeg", "image/png", "image/webp");
 * "application/octet-stream" for E2G_IMAGE_UNKNOWN.  A static string. */
const char *e2g_image_media_type(e2g_image_format fmt);

/* The usual file extension of a format, without the dot ("jpg", "png",
 * "webp"); "bin" for E2G_IMAGE_UNKNOWN.  A static string. */
const char *e2g_image_extension(e2g_image_format fmt);

/* Reads the size of an encoded image from its header alone (no pixels are
 * decoded), as e2g_image_decode would return it: for a JPEG whose EXIF
 * orientation turns it by 90°, width and height are swapped.  Lets a caller
 * refuse a decompression bomb cheaply. */
int e2g_image_probe(const uint8_t *buf, size_t n, int *width, int *height, char *err);

/* Decodes a JPEG (libturbojpeg), PNG (libpng) or still WebP (libwebp) into
 * *out, upright: the EXIF orientation of a JPEG is applied; PNGs of any bit
 * depth, palette, gray or alpha become RGB8 (16-bit channels are scaled,
 * alpha is dropped); lossy and lossless WebP become RGB8 (alpha is dropped;
 * animations are refused).  Refuses images with width·height > max_pixels
 * before allocating their pixels.  Warnings from the JPEG decoder (such as a
 * truncated stream) are errors.  On success the caller owns out->rgb (e2g_image_free); on failure
 * *out is zeroed. */
int e2g_image_decode(e2g_image *out, const uint8_t *buf, size_t n, long max_pixels, char *err);

/* Encodes im as JPEG (quality 1..100; 4:4:4 chroma at quality >= 90, 4:2:0
 * below), lossy WebP (quality 1..100) or PNG (quality is ignored).  On
 * success *out is a malloc'd buffer of *n bytes that the caller frees. */
int e2g_image_encode(uint8_t **out, size_t *n, const e2g_image *im, e2g_image_format fmt,
                     int quality, char *err);

/* e2g_image_decode on the whole contents of a file. */
int e2g_image_read_file(e2g_image *out, const char *path, long max_pixels, char *err);

/* Encodes im in the format named by path's extension (see
 * e2g_image_format_from_path) and writes it; an unknown extension is an
 * error.  A failed write removes the partial file. */
int e2g_image_write_file(const char *path, const e2g_image *im, int quality, char *err);

/* The smallest *pw >= w and *ph >= h that are multiples of `multiple`. */
void e2g_image_pad_dims(int w, int h, int multiple, int *pw, int *ph);

/* Writes im as one NHWC image of ph × pw × 3 floats, p/127.5 − 1, padding
 * the right and bottom by reflection (PyTorch 'reflect': the edge pixel is
 * not repeated, index w maps to w−2; pads wider than the image keep
 * reflecting back and forth; a 1-pixel-wide image repeats its pixel).
 * Requires pw >= im->width and ph >= im->height. */
void e2g_image_to_tensor(float *dst, const e2g_image *im, int pw, int ph);

/* Crops the top-left im->width × im->height of an NHWC tensor of
 * ph × pw × 3 floats into im->rgb (already allocated), mapping
 * round((y + 1)·127.5) clamped to 0..255; ties round to even like
 * torch.round, NaN becomes 0.  Requires pw >= im->width, ph >= im->height. */
void e2g_image_from_tensor(e2g_image *im, const float *src, int pw, int ph);

/* An image as the generator sees it: x, its pixels as one NHWC tensor of
 * ph × pw × 3 floats reflection-padded to multiples of a size, and y, room
 * for the generator's output of the same shape.  The pad → run → crop of a
 * whole-image edit (the CLI's, the server's batches) is e2g_image_pad, the
 * run on x into y, and e2g_image_unpad. */
typedef struct {
    int pw, ph;
    float *x, *y;
} e2g_image_padded;

/* Fills p for im padded to multiples of `multiple` (e2g_image_pad_dims,
 * then e2g_image_to_tensor into x).  -1 with err, and p zeroed, when the
 * size overflows or memory runs out. */
int e2g_image_pad(e2g_image_padded *p, const e2g_image *im, int multiple, char *err);
/* Crops p->y back into im, the image p was made from
 * (e2g_image_from_tensor). */
void e2g_image_unpad(e2g_image *im, const e2g_image_padded *p);
/* Frees x and y and zeroes *p; safe on a zeroed one. */
void e2g_image_padded_free(e2g_image_padded *p);

#endif
