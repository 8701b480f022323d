/* test_safetensors.c — the safetensors reader and writer: round trips in
 * each dtype, the half / bfloat16 conversions against known bit patterns and
 * independent references, one crafted bad file per validation rule (through
 * both e2g_st_open and e2g_st_parse), and failed saves that must leave
 * nothing behind. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "safetensors.h"
#include "testutil.h"

/* ---- scratch directory, one per test ------------------------------------------ */

static char tmpdir[64];

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/e2g_st_XXXXXX");
    ck_assert_msg(mkdtemp(tmpdir) != NULL, "mkdtemp: %s", strerror(errno));
}

static void teardown(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
        remove(path);
    }
    closedir(d);
    rmdir(tmpdir);
}

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

/* Entries in the scratch directory, so a test can see that nothing was left. */
static int tmp_entries(void) {
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *buf, size_t n) {
    FILE *fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(buf, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "%s: %s", path, strerror(errno));
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    rewind(fp);
    uint8_t *buf = malloc(*n ? *n : 1);
    ck_assert_uint_eq(fread(buf, 1, *n, fp), *n);
    fclose(fp);
    return buf;
}

/* A file image: the 8-byte length (len_field, or the header's own length
 * when 0), the header, then data_len bytes of data. */
static uint8_t *make_file(const char *header, uint64_t len_field, size_t data_len, size_t *size) {
    size_t hlen = strlen(header);
    uint64_t len = len_field ? len_field : hlen;
    *size = 8 + hlen + data_len;
    uint8_t *buf = calloc(1, *size);
    for (int b = 0; b < 8; b++) buf[b] = (uint8_t)(len >> 8 * b);
    memcpy(buf + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++) buf[8 + hlen + i] = (uint8_t)(i * 37 + 1);
    return buf;
}

/* Opens a file image through the filesystem; returns e2g_st_open's status. */
static int open_image(const uint8_t *buf, size_t size, e2g_st_file **f, char *err) {
    char path[256];
    tmp_path(path, sizeof path, "image.safetensors");
    write_bytes(path, buf, size);
    return e2g_st_open(f, path, err);
}

/* One header entry: "name":{"dtype":..,"shape":..,"data_offsets":[b,e]}. */
#define T(name, dtype, shape, b, e)                                                               \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

/* ---- conversions ------------------------------------------------------------------ */

static float f32_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }
static int bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f); }

static uint32_t xorshift(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

START_TEST(f16_known_patterns) {
    static const struct {
        uint32_t f32;
        uint16_t f16;
    } cases[] = {
        {0x3f800000, 0x3c00}, /* 1.0 */
        {0xc0200000, 0xc100}, /* -2.5 */
        {0x477fe000, 0x7bff}, /* 65504, the largest half */
        {0x477fefff, 0x7bff}, /* just below the tie at 65520 */
        {0x477ff000, 0x7c00}, /* 65520: tie, rounds to even = inf */
        {0x7f7fffff, 0x7c00}, /* FLT_MAX overflows to inf */
        {0x33800000, 0x0001}, /* 2^-24 = 5.96e-8, the smallest subnormal */
        {0x33000000, 0x0000}, /* 2^-25: tie between 0 and 2^-24, to even = 0 */
        {0x33000001, 0x0001}, /* just above that tie */
        {0x33c00000, 0x0002}, /* 3·2^-25: tie between 1 and 2 units, to even = 2 */
        {0x34200000, 0x0002}, /* 5·2^-25: tie between 2 and 3 units, to even = 2 */
        {0x34400000, 0x0003}, /* 3·2^-24, exact */
        {0x387fc000, 0x03ff}, /* the largest subnormal */
        {0x387fe000, 0x0400}, /* tie above it rounds up into the normals */
        {0x38800000, 0x0400}, /* 2^-14, the smallest normal */
        {0x3f801000, 0x3c00}, /* 1 + 2^-11: tie, to even = 1.0 */
        {0x3f803000, 0x3c02}, /* 1 + 3·2^-11: tie, to even = 1 + 2^-9 */
        {0x3f801001, 0x3c01}, /* just above the tie */
        {0x7f800000, 0x7c00}, /* inf */
        {0xff800000, 0xfc00}, /* -inf */
        {0x80000000, 0x8000}, /* -0 */
        {0x00000001, 0x0000}, /* the smallest float subnormal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float f = f32_of(cases[i].f32);
        ck_assert_msg(e2g_f32_to_f16(f) == cases[i].f16, "f32 0x%08x -> f16 0x%04x, want 0x%04x",
                      cases[i].f32, e2g_f32_to_f16(f), cases[i].f16);
    }
    ck_assert_float_eq(e2g_f16_to_f32(0x3c00), 1.0f);
    ck_assert_float_eq(e2g_f16_to_f32(0xc100), -2.5f);
    ck_assert_float_eq(e2g_f16_to_f32(0x7bff), 65504.0f);
    ck_assert_float_eq(e2g_f16_to_f32(0x0001), ldexpf(1.0f, -24));
    ck_assert_float_eq(e2g_f16_to_f32(0x03ff), ldexpf(1023.0f, -24));
    ck_assert_float_eq(e2g_f16_to_f32(0x0200), ldexpf(1.0f, -15));
    ck_assert(isinf(e2g_f16_to_f32(0x7c00)) && e2g_f16_to_f32(0x7c00) > 0);
    ck_assert(isinf(e2g_f16_to_f32(0xfc00)) && e2g_f16_to_f32(0xfc00) < 0);
    ck_assert_uint_eq(bits_of(e2g_f16_to_f32(0x8000)), 0x80000000u);
    ck_assert(isnan(e2g_f16_to_f32(0x7e00)));
    ck_assert(isnan(e2g_f16_to_f32(0x7c01)));
    ck_assert(f16_is_nan(e2g_f32_to_f16(NAN)));
    ck_assert(f16_is_nan(e2g_f32_to_f16(f32_of(0x7f800001)))); /* payload only in the low bits */
    ck_assert(f16_is_nan(e2g_f32_to_f16(f32_of(0xffc00000))));
}
END_TEST

/* Every half survives half -> float -> half, and matches the compiler's own
 * _Float16 where it has one. */
START_TEST(f16_exhaustive) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = e2g_f16_to_f32((uint16_t)h);
        if (f16_is_nan((uint16_t)h)) {
            ck_assert_msg(isnan(f), "f16 0x%04x should be NaN", h);
            ck_assert(f16_is_nan(e2g_f32_to_f16(f)));
            continue;
        }
        ck_assert_msg(e2g_f32_to_f16(f) == h, "f16 0x%04x -> %g -> 0x%04x", h, f, e2g_f32_to_f16(f));
#ifdef __FLT16_MAX__
        _Float16 ref;
        uint16_t hh = (uint16_t)h;
        memcpy(&ref, &hh, 2);
        ck_assert_msg(bits_of(f) == bits_of((float)ref), "f16 0x%04x: %g, _Float16 says %g", h, f,
                      (float)ref);
#endif
    }
}
END_TEST

#ifdef __FLT16_MAX__
/* float -> half on random bit patterns against the compiler's conversion. */
START_TEST(f16_vs_compiler) {
    uint32_t s = 12345;
    for (int i = 0; i < 300000; i++) {
        uint32_t u = xorshift(&s);
        /* Half of the draws in the half range, where rounding matters. */
        if (i & 1) u = (u & 0x80000000u) | (0x33000000u + u % (0x47800000u - 0x33000000u));
        float f = f32_of(u);
        if (isnan(f)) continue;
        _Float16 ref = (_Float16)f;
        uint16_t want;
        memcpy(&want, &ref, 2);
        ck_assert_msg(e2g_f32_to_f16(f) == want, "f32 0x%08x -> 0x%04x, _Float16 says 0x%04x", u,
                      e2g_f32_to_f16(f), want);
    }
}
END_TEST
#endif

START_TEST(bf16_known_patterns) {
    static const struct {
        uint32_t f32;
        uint16_t bf16;
    } cases[] = {
        {0x3f800000, 0x3f80}, /* 1.0 */
        {0xc0200000, 0xc020}, /* -2.5 */
        {0x3f808000, 0x3f80}, /* tie, to even (down) */
        {0x3f818000, 0x3f82}, /* tie, to even (up) */
        {0x3f808001, 0x3f81}, /* just above the tie */
        {0x3f807fff, 0x3f80}, /* just below it */
        {0x7f7f8000, 0x7f80}, /* tie above the largest bf16: to even = inf */
        {0x7f7fffff, 0x7f80}, /* FLT_MAX rounds to inf */
        {0x7f800000, 0x7f80}, /* inf */
        {0xff800000, 0xff80}, /* -inf */
        {0x00018000, 0x0002}, /* subnormal tie, to even (up) */
        {0x80000000, 0x8000}, /* -0 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float f = f32_of(cases[i].f32);
        ck_assert_msg(e2g_f32_to_bf16(f) == cases[i].bf16, "f32 0x%08x -> bf16 0x%04x, want 0x%04x",
                      cases[i].f32, e2g_f32_to_bf16(f), cases[i].bf16);
    }
    ck_assert_float_eq(e2g_bf16_to_f32(0x3f80), 1.0f);
    ck_assert_float_eq(e2g_bf16_to_f32(0xc020), -2.5f);
    ck_assert(isinf(e2g_bf16_to_f32(0x7f80)));
    ck_assert(isnan(e2g_bf16_to_f32(0x7fc0)));
    ck_assert(bf16_is_nan(e2g_f32_to_bf16(NAN)));
    ck_assert(bf16_is_nan(e2g_f32_to_bf16(f32_of(0x7f800001)))); /* would truncate to inf */
    ck_assert(bf16_is_nan(e2g_f32_to_bf16(f32_of(0xff800001))));
}
END_TEST

/* Round trips every bfloat16, and checks float -> bfloat16 on random floats
 * against nearest-even computed in double from the two neighbours. */
START_TEST(bf16_exhaustive) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = e2g_bf16_to_f32((uint16_t)h);
        ck_assert_uint_eq(bits_of(f), h << 16);
        if (bf16_is_nan((uint16_t)h)) ck_assert(bf16_is_nan(e2g_f32_to_bf16(f)));
        else ck_assert_uint_eq(e2g_f32_to_bf16(f), h);
    }
    uint32_t s = 777;
    for (int i = 0; i < 300000; i++) {
        uint32_t u = xorshift(&s);
        if ((u & 0x7f800000) == 0x7f800000) continue; /* inf and nan: covered above */
        uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
        double f = f32_of(u), dlo = fabs(f - f32_of(lo));
        /* hi is inf when lo is the largest finite; the tie then sits at
         * lo + half an ulp, as for any other bfloat16. */
        double dhi = (hi & 0x7fffffff) == 0x7f800000 ? ldexp(1.0, 128) - fabs(f) : fabs(f32_of(hi) - f);
        uint16_t want = (uint16_t)((dlo < dhi || (dlo == dhi && !(lo & 0x10000))) ? lo >> 16 : hi >> 16);
        ck_assert_msg(e2g_f32_to_bf16(f32_of(u)) == want, "f32 0x%08x -> 0x%04x, want 0x%04x", u,
                      e2g_f32_to_bf16(f32_of(u)), want);
    }
}
END_TEST

/* ---- round trips ------------------------------------------------------------------ */

START_TEST(round_trip_all_dtypes) {
    char path[256], err[E2G_ERR_LEN] = "";
    tmp_path(path, sizeof path, "rt.safetensors");
    float w32[2 * 3 * 4], h16[5 * 7], b16[4 * 4 * 2], scalar = 3.25f;
    fill_random(w32, 24, 1);
    fill_random(h16, 35, 2);
    fill_random(b16, 32, 3);
    h16[0] = 65504.0f;
    h16[1] = -INFINITY;
    h16[2] = ldexpf(1.0f, -24);
    b16[0] = 1e30f;
    const int64_t s_w[] = {2, 3, 4}, s_empty[] = {3, 0, 2}, s_h[] = {5, 7}, s_b[] = {4, 4, 2};

    e2g_st_writer *w = e2g_st_writer_new();
    ck_assert_int_eq(e2g_st_writer_meta(w, "format", "e2gan-base", err), 0);
    ck_assert_int_eq(e2g_st_writer_meta(w, "ngf", "32", err), 0);
    ck_assert_int_eq(e2g_st_writer_meta(w, "note", "h\xc3\xa9llo \"quoted\"\n", err), 0);
    ck_assert_int_eq(e2g_st_writer_meta(w, "empty", "", err), 0);
    ck_assert_int_eq(e2g_st_writer_add(w, "enc1.conv.weight", E2G_DTYPE_F32, 3, s_w, w32, err), 0);
    ck_assert_int_eq(e2g_st_writer_add(w, "scalar", E2G_DTYPE_F32, 0, NULL, &scalar, err), 0);
    ck_assert_int_eq(e2g_st_writer_add(w, "empty", E2G_DTYPE_F16, 3, s_empty, NULL, err), 0);
    ck_assert_int_eq(e2g_st_writer_add(w, "half", E2G_DTYPE_F16, 2, s_h, h16, err), 0);
    ck_assert_int_eq(e2g_st_writer_add(w, "brain", E2G_DTYPE_BF16, 3, s_b, b16, err), 0);
    ck_assert_msg(e2g_st_writer_save(w, path, err) == 0, "save: %s", err);
    e2g_st_writer_free(w);
    ck_assert_int_eq(tmp_entries(), 1); /* no temp file left */

    /* The layout on disk: padded header, metadata first, data 8-aligned. */
    size_t size;
    uint8_t *raw = read_bytes(path, &size);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = hlen << 8 | raw[b];
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_uint_eq(size, 8 + hlen + 24 * 4 + 4 + 0 + 35 * 2 + 32 * 2);
    ck_assert_msg(!memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"e2gan-base\"", 38),
                  "header starts %.40s", raw + 8);
    free(raw);

    e2g_st_file *f = NULL;
    ck_assert_msg(e2g_st_open(&f, path, err) == 0, "open: %s", err);
    ck_assert_int_eq(e2g_st_count(f), 5);
    const char *order[] = {"enc1.conv.weight", "scalar", "empty", "half", "brain"};
    for (int i = 0; i < 5; i++) ck_assert_str_eq(e2g_st_at(f, i)->name, order[i]);
    ck_assert_ptr_null(e2g_st_at(f, 5));
    ck_assert_ptr_null(e2g_st_at(f, -1));

    const e2g_st_tensor *t = e2g_st_find(f, "enc1.conv.weight");
    ck_assert_int_eq(t->dtype, E2G_DTYPE_F32);
    ck_assert_int_eq(t->ndim, 3);
    ck_assert(t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 4);
    ck_assert_uint_eq(t->numel, 24);
    ck_assert_uint_eq(t->nbytes, 96);
    float got[64];
    ck_assert_int_eq(e2g_st_read_f32(f, "enc1.conv.weight", 3, s_w, got, err), 0);
    ck_assert_mem_eq(got, w32, sizeof w32);

    t = e2g_st_find(f, "scalar");
    ck_assert(t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
    ck_assert_int_eq(e2g_st_read_f32(f, "scalar", 0, NULL, got, err), 0);
    ck_assert_float_eq(got[0], 3.25f);

    t = e2g_st_find(f, "empty");
    ck_assert(t->dtype == E2G_DTYPE_F16 && t->ndim == 3 && t->shape[1] == 0);
    ck_assert(t->numel == 0 && t->nbytes == 0);

    t = e2g_st_find(f, "half");
    ck_assert(t->dtype == E2G_DTYPE_F16 && t->numel == 35 && t->nbytes == 70);
    ck_assert_int_eq(e2g_st_read_f32(f, "half", 2, s_h, got, err), 0);
    for (int i = 0; i < 35; i++) ck_assert_float_eq(got[i], e2g_f16_to_f32(e2g_f32_to_f16(h16[i])));
    ck_assert_float_eq(got[0], 65504.0f);
    ck_assert(isinf(got[1]) && got[1] < 0);
    ck_assert_float_eq(got[2], ldexpf(1.0f, -24));
    ck_assert_double_le(rel_error("half", got + 3, h16 + 3, 32, 1e-3), 1e-3);

    t = e2g_st_find(f, "brain");
    ck_assert(t->dtype == E2G_DTYPE_BF16 && t->numel == 32 && t->nbytes == 64);
    ck_assert_int_eq(e2g_st_read_f32(f, "brain", 3, s_b, got, err), 0);
    for (int i = 0; i < 32; i++) ck_assert_float_eq(got[i], e2g_bf16_to_f32(e2g_f32_to_bf16(b16[i])));
    ck_assert_double_le(rel_error("brain", got + 1, b16 + 1, 31, 8e-3), 8e-3);
    ck_assert_ptr_null(e2g_st_find(f, "nope"));

    ck_assert_int_eq(e2g_st_meta_count(f), 4);
    const char *keys[] = {"format", "ngf", "note", "empty"};
    for (int i = 0; i < 4; i++) ck_assert_str_eq(e2g_st_meta_key(f, i), keys[i]);
    ck_assert_ptr_null(e2g_st_meta_key(f, 4));
    ck_assert_str_eq(e2g_st_meta(f, "format"), "e2gan-base");
    ck_assert_str_eq(e2g_st_meta(f, "ngf"), "32");
    ck_assert_str_eq(e2g_st_meta(f, "note"), "h\xc3\xa9llo \"quoted\"\n");
    ck_assert_str_eq(e2g_st_meta(f, "empty"), "");
    ck_assert_ptr_null(e2g_st_meta(f, "missing"));
    e2g_st_close(f);
}
END_TEST

START_TEST(read_f32_checks) {
    char path[256], err[E2G_ERR_LEN];
    tmp_path(path, sizeof path, "r.safetensors");
    float x[6] = {1, 2, 3, 4, 5, 6}, got[6];
    const int64_t shape[] = {2, 3}, wrong[] = {3, 2};
    e2g_st_writer *w = e2g_st_writer_new();
    ck_assert_int_eq(e2g_st_writer_add(w, "tb.fc1.weight", E2G_DTYPE_F32, 2, shape, x, err), 0);
    ck_assert_int_eq(e2g_st_writer_save(w, path, err), 0);
    e2g_st_writer_free(w);
    e2g_st_file *f;
    ck_assert_int_eq(e2g_st_open(&f, path, err), 0);

    err[0] = 0;
    ck_assert_int_eq(e2g_st_read_f32(f, "tb.fc2.weight", 2, shape, got, err), -1);
    ck_assert_msg(strstr(err, "'tb.fc2.weight'") && strstr(err, "missing"), "%s", err);
    err[0] = 0;
    ck_assert_int_eq(e2g_st_read_f32(f, "tb.fc1.weight", 2, wrong, got, err), -1);
    ck_assert_msg(strstr(err, "'tb.fc1.weight'") && strstr(err, "[2,3]") && strstr(err, "expected [3,2]"),
                  "%s", err);
    err[0] = 0;
    ck_assert_int_eq(e2g_st_read_f32(f, "tb.fc1.weight", 1, shape, got, err), -1);
    ck_assert_msg(strstr(err, "expected [2]"), "%s", err);
    ck_assert_int_eq(e2g_st_read_f32(f, "tb.fc1.weight", 2, shape, got, err), 0);
    ck_assert_mem_eq(got, x, sizeof x);
    e2g_st_close(f);
}
END_TEST

/* Valid files the writer never produces: unaligned data, header order unlike
 * data order, zero-size tensors sharing an offset, no tensors at all. */
START_TEST(valid_edge_files) {
    char err[E2G_ERR_LEN];
    e2g_st_file *f;
    size_t size;
    /* The data section starts at an odd offset, so the F32 data is unaligned. */
    const char *hdr = "{" T("b", "F32", "[2]", 8, 16) "," T("z", "BF16", "[0,5]", 8, 8) "," T(
        "a", "F32", "[2]", 0, 8) "," T("y", "F16", "[0]", 0, 0) "}  ";
    uint8_t *buf = make_file(hdr, 0, 16, &size);
    ck_assert_uint_eq((size - 16) % 2, 1);
    float vals[4] = {1.5f, -2.0f, 1e-3f, 7.0f};
    for (int i = 0; i < 4; i++) {
        uint32_t u = bits_of(vals[i]);
        for (int b = 0; b < 4; b++) buf[size - 16 + 4 * i + b] = (uint8_t)(u >> 8 * b);
    }
    ck_assert_msg(open_image(buf, size, &f, err) == 0, "%s", err);
    const char *order[] = {"y", "a", "z", "b"}; /* by offset, then size, then name */
    ck_assert_int_eq(e2g_st_count(f), 4);
    for (int i = 0; i < 4; i++) ck_assert_str_eq(e2g_st_at(f, i)->name, order[i]);
    float got[2];
    const int64_t two[] = {2};
    ck_assert_int_eq(e2g_st_read_f32(f, "a", 1, two, got, err), 0);
    ck_assert(got[0] == 1.5f && got[1] == -2.0f);
    ck_assert_int_eq(e2g_st_read_f32(f, "b", 1, two, got, err), 0);
    ck_assert(got[0] == 1e-3f && got[1] == 7.0f);
    ck_assert_int_eq(e2g_st_meta_count(f), 0);
    e2g_st_close(f);
    ck_assert_int_eq(e2g_st_parse(&f, buf, size, err), 0); /* takes buf */
    e2g_st_close(f);

    buf = make_file("{}", 0, 0, &size);
    ck_assert_msg(e2g_st_parse(&f, buf, size, err) == 0, "%s", err);
    ck_assert_int_eq(e2g_st_count(f), 0);
    e2g_st_close(f);
}
END_TEST

START_TEST(sha256_known_file) {
    char err[E2G_ERR_LEN], hex[65];
    size_t size;
    uint8_t *buf = make_file("{}      ", 0, 0, &size);
    e2g_st_file *f;
    ck_assert_msg(e2g_st_parse(&f, buf, size, err) == 0, "%s", err);
    e2g_st_sha256(f, hex);
    /* sha256sum of the 16 bytes 08 00 00 00 00 00 00 00 '{' '}' and 6 spaces. */
    ck_assert_str_eq(hex, "9bbcbf73561f6bc5d0a17ea6a2081feed2d1304e87602d8c502d9a5c4bd85576");
    e2g_st_close(f);
}
END_TEST

/* ---- bad files --------------------------------------------------------------------- */

typedef struct {
    const char *what;
    const char *header;
    size_t data_len;
    uint64_t len_field; /* 0: the header's real length */
    const char *keyword; /* must appear in the error */
} bad_case;

static const bad_case bad_cases[] = {
    {"header length over 100 MB", "{}", 0, 100000001, "over the 100000000-byte limit"},
    {"header length 2^64-1", "{}", 0, UINT64_MAX, "over the"},
    {"header length past the file", "{}", 0, 1000, "past the end of the file"},
    {"not JSON", "{\"a\": {\"dtype\": ", 0, 0, "not valid JSON"},
    {"JSON then garbage", "{} x", 0, 0, "not valid JSON"},
    {"empty header", " ", 0, 0, "not valid JSON"},
    {"header not an object", "[1, 2]", 0, 0, "not a JSON object"},
    {"duplicate tensor keys", "{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 0, 4) "}", 4, 0,
     "duplicate"},
    {"duplicate metadata keys", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, 0, "duplicate"},
    {"unknown dtype F64", "{" T("w", "F64", "[1]", 0, 8) "}", 8, 0, "unknown dtype 'F64'"},
    {"unknown dtype I8", "{" T("w", "I8", "[4]", 0, 4) "}", 4, 0, "unknown dtype 'I8'"},
    {"dtype not a string", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "dtype"},
    {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "missing"},
    {"negative dim", "{" T("w", "F32", "[2,-3]", 0, 24) "}", 24, 0, "negative"},
    {"non-integer dim", "{" T("w", "F32", "[2.0]", 0, 8) "}", 8, 0, "not an integer"},
    {"shape not an array", "{" T("w", "F32", "4", 0, 16) "}", 16, 0, "shape"},
    {"too many dims", "{" T("w", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, 0, "more than 8"},
    {"shape overflows", "{" T("w", "F32", "[4294967296,4294967296,4294967296]", 0, 4) "}", 4, 0,
     "overflows"},
    {"size != prod(shape) x 4", "{" T("enc1.conv.weight", "F32", "[2,2]", 0, 12) "}", 12, 0,
     "'enc1.conv.weight': data_offsets [0, 12] do not match shape [2,2] x F32 = 16 bytes"},
    {"size != prod(shape) x 2", "{" T("w", "F16", "[2,2]", 0, 16) "}", 16, 0, "= 8 bytes"},
    {"offsets past the data", "{" T("w", "F32", "[4]", 0, 16) "}", 8, 0, "past the data section"},
    {"offsets end before begin", "{" T("w", "F32", "[1]", 8, 4) "}", 8, 0, "end before"},
    {"negative offset", "{" T("w", "F32", "[1]", -4, 0) "}", 0, 0, "non-negative"},
    {"offsets not a pair", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, 0,
     "data_offsets"},
    {"overlapping offsets", "{" T("a", "F32", "[4]", 0, 16) "," T("b", "F32", "[4]", 8, 24) "}", 24, 0,
     "overlap"},
    {"gap between tensors", "{" T("a", "F32", "[4]", 0, 16) "," T("b", "F32", "[4]", 20, 36) "}", 36, 0,
     "gap between tensor 'a'"},
    {"gap before the first tensor", "{" T("a", "F32", "[4]", 4, 20) "}", 20, 0, "gap before"},
    {"trailing bytes", "{" T("a", "F32", "[4]", 0, 16) "}", 24, 0, "8 trailing bytes"},
    {"data with no tensors", "{}", 4, 0, "trailing"},
    {"metadata value not a string", "{\"__metadata__\":{\"ngf\":32}}", 0, 0, "'ngf' is not a string"},
    {"metadata not an object", "{\"__metadata__\":[\"a\"]}", 0, 0, "__metadata__ is not an object"},
    {"tensor entry not an object", "{\"w\":[1]}", 0, 0, "'w': entry is not an object"},
    {"unknown field in an entry",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"scale\":2}}", 4, 0,
     "unknown field 'scale'"},
};

/* Each bad file fails with a specific message through the file path and
 * from memory, and hands back no file. */
START_TEST(bad_file) {
    const bad_case *c = &bad_cases[_i];
    char err[E2G_ERR_LEN] = "";
    size_t size;
    uint8_t *buf = make_file(c->header, c->len_field, c->data_len, &size);
    e2g_st_file *f = (e2g_st_file *)1;
    ck_assert_msg(open_image(buf, size, &f, err) == -1, "%s: opened", c->what);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(err, c->keyword), "%s: error '%s' lacks '%s'", c->what, err, c->keyword);
    ck_assert_msg(strstr(err, "image.safetensors"), "%s: error '%s' lacks the path", c->what, err);

    err[0] = 0;
    f = (e2g_st_file *)1;
    ck_assert_msg(e2g_st_parse(&f, buf, size, err) == -1, "%s: parsed", c->what);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(err, c->keyword), "%s: error '%s' lacks '%s'", c->what, err, c->keyword);
}
END_TEST

START_TEST(file_too_short) {
    const uint8_t bytes[7] = {2, 0, 0, 0, 0, 0, 0};
    const size_t sizes[] = {0, 5, 7};
    for (int i = 0; i < 3; i++) {
        char err[E2G_ERR_LEN] = "";
        e2g_st_file *f = (e2g_st_file *)1;
        ck_assert_int_eq(open_image(bytes, sizes[i], &f, err), -1);
        ck_assert_ptr_null(f);
        ck_assert_msg(strstr(err, "shorter than the 8-byte"), "%s", err);
        uint8_t *buf = malloc(7);
        memcpy(buf, bytes, 7);
        err[0] = 0;
        f = (e2g_st_file *)1;
        ck_assert_int_eq(e2g_st_parse(&f, buf, sizes[i], err), -1);
        ck_assert_ptr_null(f);
        ck_assert_msg(strstr(err, "shorter than the 8-byte"), "%s", err);
    }
}
END_TEST

START_TEST(open_not_a_file) {
    char path[256], err[E2G_ERR_LEN] = "";
    e2g_st_file *f;
    tmp_path(path, sizeof path, "absent.safetensors");
    ck_assert_int_eq(e2g_st_open(&f, path, err), -1);
    ck_assert_msg(strstr(err, "No such file"), "%s", err);
    ck_assert_int_eq(e2g_st_open(&f, tmpdir, err), -1);
    ck_assert_msg(strstr(err, "not a regular file"), "%s", err);
}
END_TEST

/* ---- writer errors ------------------------------------------------------------------ */

/* Runs a writer call that must fail with `keyword` in its message. */
#define EXPECT_FAIL(call, keyword)                                                                \
    do {                                                                                          \
        err[0] = 0;                                                                               \
        ck_assert_msg((call) == -1, "%s succeeded", #call);                                       \
        ck_assert_msg(strstr(err, keyword), "%s: '%s' lacks '%s'", #call, err, keyword);          \
    } while (0)

START_TEST(writer_rejects_bad_input) {
    char err[E2G_ERR_LEN], path[256];
    float x[4] = {1, 2, 3, 4};
    const int64_t shape[] = {4}, neg[] = {-1}, huge[] = {INT64_MAX, INT64_MAX};
    e2g_st_writer *w = e2g_st_writer_new();
    ck_assert_int_eq(e2g_st_writer_add(w, "a", E2G_DTYPE_F32, 1, shape, x, err), 0);
    ck_assert_int_eq(e2g_st_writer_meta(w, "k", "v", err), 0);
    EXPECT_FAIL(e2g_st_writer_add(w, "a", E2G_DTYPE_F16, 1, shape, x, err), "'a' added twice");
    EXPECT_FAIL(e2g_st_writer_add(w, "b", E2G_DTYPE_F32, 1, neg, x, err), "negative");
    EXPECT_FAIL(e2g_st_writer_add(w, "b", E2G_DTYPE_F32, 9, shape, x, err), "rank 9");
    EXPECT_FAIL(e2g_st_writer_add(w, "b", E2G_DTYPE_F32, 2, huge, x, err), "overflows");
    EXPECT_FAIL(e2g_st_writer_add(w, "b", E2G_DTYPE_F32, 1, shape, NULL, err), "no data");
    EXPECT_FAIL(e2g_st_writer_add(w, "", E2G_DTYPE_F32, 1, shape, x, err), "empty");
    EXPECT_FAIL(e2g_st_writer_add(w, "__metadata__", E2G_DTYPE_F32, 1, shape, x, err), "not a valid");
    EXPECT_FAIL(e2g_st_writer_add(w, "bad\xff", E2G_DTYPE_F32, 1, shape, x, err), "not a valid");
    EXPECT_FAIL(e2g_st_writer_meta(w, "j", "\xc3", err), "UTF-8");
    EXPECT_FAIL(e2g_st_writer_meta(w, "k", "w", err), "'k' set twice");

    /* The rejected calls changed nothing: the file holds a and k only. */
    tmp_path(path, sizeof path, "w.safetensors");
    ck_assert_int_eq(e2g_st_writer_save(w, path, err), 0);
    e2g_st_writer_free(w);
    e2g_st_file *f;
    ck_assert_int_eq(e2g_st_open(&f, path, err), 0);
    ck_assert_int_eq(e2g_st_count(f), 1);
    ck_assert_str_eq(e2g_st_at(f, 0)->name, "a");
    ck_assert_int_eq(e2g_st_meta_count(f), 1);
    ck_assert_str_eq(e2g_st_meta(f, "k"), "v");
    e2g_st_close(f);
}
END_TEST

static e2g_st_writer *small_writer(size_t n) {
    float *x = calloc(n, sizeof(float));
    int64_t shape[] = {(int64_t)n};
    char err[E2G_ERR_LEN];
    e2g_st_writer *w = e2g_st_writer_new();
    ck_assert_int_eq(e2g_st_writer_add(w, "x", E2G_DTYPE_F32, 1, shape, x, err), 0);
    free(x);
    return w;
}

START_TEST(save_into_missing_dir) {
    char path[256], err[E2G_ERR_LEN] = "";
    tmp_path(path, sizeof path, "nodir/model.safetensors");
    e2g_st_writer *w = small_writer(4);
    ck_assert_int_eq(e2g_st_writer_save(w, path, err), -1);
    ck_assert_msg(strstr(err, "No such file or directory"), "%s", err);
    e2g_st_writer_free(w);
    ck_assert_int_eq(tmp_entries(), 0);
}
END_TEST

/* rename onto a directory fails after the data was written: the temp file
 * must go. */
START_TEST(save_rename_fails) {
    char path[256], err[E2G_ERR_LEN] = "";
    tmp_path(path, sizeof path, "adir");
    ck_assert_int_eq(mkdir(path, 0755), 0);
    e2g_st_writer *w = small_writer(4);
    ck_assert_int_eq(e2g_st_writer_save(w, path, err), -1);
    ck_assert_msg(strstr(err, "cannot write") && strstr(err, "directory"), "%s", err);
    e2g_st_writer_free(w);
    ck_assert_int_eq(tmp_entries(), 1);
}
END_TEST

/* A write error half-way (a file size limit stands in for a full disk) is
 * reported with strerror and leaves neither the file nor its temp behind.
 * Runs in a child so the limit does not outlive the test. */
START_TEST(save_write_error) {
    const size_t sizes[] = {1000, 100000}; /* fails in fflush or in fwrite */
    for (int k = 0; k < 2; k++) {
        char path[256];
        tmp_path(path, sizeof path, "big.safetensors");
        e2g_st_writer *w = small_writer(sizes[k]);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            char err[E2G_ERR_LEN] = "";
            struct rlimit lim = {2048, 2048};
            signal(SIGXFSZ, SIG_IGN);
            int rc = setrlimit(RLIMIT_FSIZE, &lim) == 0 && e2g_st_writer_save(w, path, err) == -1 &&
                             strstr(err, "File too large")
                         ? 0
                         : 1;
            if (rc) fprintf(stderr, "save_write_error: '%s'\n", err);
            e2g_st_writer_free(w);
            _exit(rc);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (size %zu)", sizes[k]);
        e2g_st_writer_free(w);
        ck_assert_int_eq(tmp_entries(), 0);
    }
}
END_TEST

static Suite *safetensors_suite(void) {
    Suite *s = suite_create("safetensors");
    TCase *conv = tcase_create("conversions");
    tcase_set_timeout(conv, 120);
    tcase_add_test(conv, f16_known_patterns);
    tcase_add_test(conv, f16_exhaustive);
#ifdef __FLT16_MAX__
    tcase_add_test(conv, f16_vs_compiler);
#endif
    tcase_add_test(conv, bf16_known_patterns);
    tcase_add_test(conv, bf16_exhaustive);
    suite_add_tcase(s, conv);

    TCase *files = tcase_create("files");
    tcase_set_timeout(files, 60);
    tcase_add_checked_fixture(files, setup, teardown);
    tcase_add_test(files, round_trip_all_dtypes);
    tcase_add_test(files, read_f32_checks);
    tcase_add_test(files, valid_edge_files);
    tcase_add_test(files, sha256_known_file);
    tcase_add_loop_test(files, bad_file, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(files, file_too_short);
    tcase_add_test(files, open_not_a_file);
    tcase_add_test(files, writer_rejects_bad_input);
    tcase_add_test(files, save_into_missing_dir);
    tcase_add_test(files, save_rename_fails);
    tcase_add_test(files, save_write_error);
    suite_add_tcase(s, files);
    return s;
}

int main(void) { return run_suite(safetensors_suite()); }
