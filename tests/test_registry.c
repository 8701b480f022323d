/* test_registry.c — the server's concept registry: directory scan (corrupt
 * and clashing files skipped, the rest served), listing, acquire/release
 * with blends, LRU eviction bounded in bytes that never evicts a pinned
 * adapter, validated atomic uploads (bad name, corrupt file, foreign base),
 * deletes, rescans after another process changed the directory, and the
 * watcher thread (inotify) following files that another process adds,
 * replaces and removes, within a second, while a replaced adapter stays
 * valid for the request that pinned it; and the adapters' identity (lora
 * id), which comes from their bytes. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "registry.h"
#include "testutil.h"

static char dir[256];
static e2g_model *base;
static uint8_t *adapter_bytes;
static size_t adapter_len;

static char *refs_path(const char *name) {
    static char path[2][1024];
    static int next;
    char *p = path[next++ % 2];
    snprintf(p, sizeof path[0], "%s/%s", getenv("E2G_REFS"), name);
    return p;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*n);
    ck_assert_uint_eq(fread(buf, 1, *n, f), *n);
    fclose(f);
    return buf;
}

static void write_file(const char *name, const void *data, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(data, 1, n, f);
    fclose(f);
}

static void setup(void) {
    char err[E2G_ERR_LEN];
    snprintf(dir, sizeof dir, "/tmp/e2g_registry_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_msg(e2g_model_load(&base, refs_path("g_default_ngf16_base.safetensors"), err) == 0, "%s", err);
    adapter_bytes = read_all(refs_path("g_lora_default_ngf16_adapter.safetensors"), &adapter_len);
    write_file("alpha.safetensors", adapter_bytes, adapter_len);
    write_file("beta.safetensors", adapter_bytes, adapter_len);
    write_file("broken.safetensors", adapter_bytes, adapter_len / 2);    /* truncated */
    write_file("base-a.safetensors", adapter_bytes, adapter_len);        /* clashes with a base concept */
    write_file("notes.txt", "not an adapter", 14);
}

static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    e2g_model_free(base);
    free(adapter_bytes);
}

static int listed(e2g_registry *r, const char *name, const char *kind) {
    json_t *list = e2g_registry_list(r);
    size_t i;
    json_t *item;
    int found = 0;
    json_array_foreach(list, i, item) {
        found |= strcmp(json_string_value(json_object_get(item, "name")), name) == 0 &&
                 strcmp(json_string_value(json_object_get(item, "kind")), kind) == 0;
    }
    json_decref(list);
    return found;
}

START_TEST(test_scan_and_list) {
    char err[E2G_ERR_LEN];
    e2g_registry *r = NULL;
    ck_assert_int_eq(e2g_registry_open(&r, base, dir, 1 << 30, err), 0);
    ck_assert(listed(r, "base-a", "base") && listed(r, "base-b", "base"));
    ck_assert(listed(r, "alpha", "adapter") && listed(r, "beta", "adapter"));
    ck_assert(!listed(r, "broken", "adapter") && !listed(r, "base-a", "adapter"));
    json_t *d = e2g_registry_describe(r, "alpha");
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "file_bytes")), (json_int_t)adapter_len);
    ck_assert_int_gt(json_object_size(json_object_get(d, "ranks")), 0);
    json_decref(d);
    ck_assert_ptr_null(e2g_registry_describe(r, "nope"));
    e2g_registry_close(r);
}
END_TEST

START_TEST(test_acquire_release_and_eviction) {
    char err[E2G_ERR_LEN];
    e2g_registry *r = NULL;
    /* room for one adapter only */
    ck_assert_int_eq(e2g_registry_open(&r, base, dir, adapter_len, err), 0);
    e2g_registry_stats s;
    e2g_registry_stats_get(r, &s);
    ck_assert_int_eq(s.adapters, 2);
    ck_assert_int_le(s.cached, 1);
    e2g_request a, b;
    ck_assert_msg(e2g_registry_acquire(r, &a, "alpha", 1.0f, err) == 0, "%s", err);
    ck_assert_msg(e2g_registry_acquire(r, &b, "beta:0.5,base-a:0.5", 0.8f, err) == 0, "%s", err);
    ck_assert_int_eq(a.edit.n_terms, 1);
    ck_assert_int_eq(b.edit.n_terms, 1);
    ck_assert(a.edit.terms[0].lora != b.edit.terms[0].lora);
    ck_assert_float_eq_tol(b.edit.terms[0].coef, 0.4f, 1e-6f);
    /* both pinned: over the limit, nothing evicted, both still usable */
    e2g_registry_stats_get(r, &s);
    ck_assert_int_eq(s.cached, 2);
    ck_assert(a.edit.terms[0].lora->rank[0] > 0 && b.edit.terms[0].lora->rank[0] > 0);
    e2g_registry_release(r, &a);
    e2g_registry_release(r, &b);
    /* a new use evicts down to the limit */
    ck_assert_int_eq(e2g_registry_acquire(r, &a, "alpha", 1.0f, err), 0);
    e2g_registry_release(r, &a);
    e2g_registry_stats_get(r, &s);
    ck_assert_int_le(s.cached_bytes, s.cache_limit);
    ck_assert_int_gt(s.evictions, 0);
    ck_assert_int_gt(s.hits + s.misses, 2);
    ck_assert_int_eq(e2g_registry_acquire(r, &a, "nope", 1.0f, err), -2);
    ck_assert_int_eq(e2g_registry_acquire(r, &a, "alpha", 3.0f, err), -1);
    ck_assert_int_eq(e2g_registry_acquire(r, &a, "alpha:0.5,", 1.0f, err), -1);
    e2g_registry_close(r);
}
END_TEST

START_TEST(test_put_delete_rescan) {
    char err[E2G_ERR_LEN], path[512];
    e2g_registry *r = NULL;
    int created = 0;
    ck_assert_int_eq(e2g_registry_open(&r, base, dir, 1 << 30, err), 0);
    ck_assert_int_eq(e2g_registry_put(r, "gamma", adapter_bytes, adapter_len, &created, err), 0);
    ck_assert_int_eq(created, 1);
    ck_assert(listed(r, "gamma", "adapter"));
    ck_assert_int_eq(e2g_registry_put(r, "gamma", adapter_bytes, adapter_len, &created, err), 0);
    ck_assert_int_eq(created, 0);
    /* refused uploads leave nothing behind */
    ck_assert_int_eq(e2g_registry_put(r, "../evil", adapter_bytes, adapter_len, &created, err), -1);
    ck_assert_int_eq(e2g_registry_put(r, "base-b", adapter_bytes, adapter_len, &created, err), -1);
    ck_assert_int_eq(e2g_registry_put(r, "half", adapter_bytes, adapter_len / 2, &created, err), -2);
    size_t other_len;
    uint8_t *other = read_all(refs_path("g_lora_default_ngf32_adapter.safetensors"), &other_len);
    ck_assert_int_eq(e2g_registry_put(r, "foreign", other, other_len, &created, err), -2);
    ck_assert_msg(strstr(err, "another base"), "%s", err);
    free(other);
    snprintf(path, sizeof path, "ls -A %s | grep -c -v -E '^(alpha|beta|broken|base-a|gamma)\\.safetensors$|^notes.txt$' | grep -qx 0", dir);
    ck_assert_msg(system(path) == 0, "stray files in %s", dir);
    /* deletes */
    ck_assert_int_eq(e2g_registry_delete(r, "gamma", err), 0);
    ck_assert(!listed(r, "gamma", "adapter"));
    ck_assert_int_eq(e2g_registry_delete(r, "gamma", err), -1);
    ck_assert_int_eq(e2g_registry_delete(r, "base-a", err), -2);
    /* another process adds and removes files */
    write_file("delta.safetensors", adapter_bytes, adapter_len);
    snprintf(path, sizeof path, "%s/alpha.safetensors", dir);
    ck_assert_int_eq(unlink(path), 0);
    e2g_registry_rescan(r);
    ck_assert(listed(r, "delta", "adapter") && !listed(r, "alpha", "adapter"));
    e2g_registry_close(r);
}
END_TEST

/* Waits up to 1 s for listed(name) to become `want`. */
static int listed_within_1s(e2g_registry *r, const char *name, int want) {
    for (int i = 0; i < 100; i++) {
        if (listed(r, name, "adapter") == want) return 1;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return 0;
}

/* The first value of the concept embedding of the adapter `name` serves. */
static float served_concept0(e2g_registry *r, const char *name) {
    char err[E2G_ERR_LEN];
    e2g_request req;
    ck_assert_msg(e2g_registry_acquire(r, &req, name, 1.0f, err) == 0, "%s", err);
    float v = req.edit.terms[0].lora->concept[0];
    e2g_registry_release(r, &req);
    return v;
}

/* Writes the adapter under a temp name, then renames it to NAME.safetensors,
 * as another replica's upload does. */
static void drop_in(const char *name, const char *tmp_name, const void *data, size_t n) {
    char from[512], to[512];
    write_file(tmp_name, data, n);
    snprintf(from, sizeof from, "%s/%s", dir, tmp_name);
    snprintf(to, sizeof to, "%s/%s.safetensors", dir, name);
    ck_assert_int_eq(rename(from, to), 0);
}

START_TEST(test_watch_directory) {
    char err[E2G_ERR_LEN], path[512];
    e2g_registry *r = NULL;
    ck_assert_int_eq(e2g_registry_open(&r, base, dir, 1 << 30, err), 0);
    ck_assert_msg(e2g_registry_watch(r, 0, err) == 0, "%s", err);

    /* added: a temp file renamed into place; temp and hidden files ignored */
    drop_in("gamma", ".gamma.upload.tmp", adapter_bytes, adapter_len);
    write_file(".hidden.safetensors", adapter_bytes, adapter_len);
    write_file("gamma.safetensors.part", adapter_bytes, adapter_len);
    ck_assert_msg(listed_within_1s(r, "gamma", 1), "gamma not listed within 1 s");
    e2g_request req;
    ck_assert_msg(e2g_registry_acquire(r, &req, "gamma:0.5,beta:0.5", 1.0f, err) == 0, "%s", err);
    e2g_registry_release(r, &req);
    ck_assert(!listed(r, ".hidden", "adapter") && !listed(r, "gamma.safetensors", "adapter"));

    /* replaced: alpha's new content serves, while a request that pinned the
     * old one keeps it intact until it is released */
    e2g_request pinned;
    ck_assert_int_eq(e2g_registry_acquire(r, &pinned, "alpha", 1.0f, err), 0);
    const float old_value = pinned.edit.terms[0].lora->concept[0];
    e2g_adapter *a = NULL;
    snprintf(path, sizeof path, "%s/alpha.safetensors", dir);
    ck_assert_msg(e2g_adapter_load(&a, base, path, err) == 0, "%s", err);
    a->lora->concept[0] = old_value + 42.0f;
    snprintf(path, sizeof path, "%s/.alpha.new", dir);
    ck_assert_msg(e2g_adapter_save(path, base, a->lora, "alpha", NULL, err) == 0, "%s", err);
    e2g_adapter_free(a);
    char to[512];
    snprintf(to, sizeof to, "%s/alpha.safetensors", dir);
    ck_assert_int_eq(rename(path, to), 0);
    float served = old_value;
    for (int i = 0; i < 100 && served == old_value; i++) {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        served = served_concept0(r, "alpha");
    }
    ck_assert_msg(served == old_value + 42.0f, "the replaced alpha was not served within 1 s");
    ck_assert(pinned.edit.terms[0].lora->concept[0] == old_value);
    e2g_registry_release(r, &pinned);

    /* replaced by a broken file: gone rather than stale */
    drop_in("beta", ".beta.tmp", adapter_bytes, adapter_len / 2);
    ck_assert_msg(listed_within_1s(r, "beta", 0), "the broken beta still listed after 1 s");
    ck_assert_int_eq(e2g_registry_acquire(r, &req, "beta", 1.0f, err), -2);

    /* removed, and renamed away */
    snprintf(path, sizeof path, "%s/gamma.safetensors", dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_msg(listed_within_1s(r, "gamma", 0), "gamma still listed 1 s after its removal");
    snprintf(path, sizeof path, "%s/alpha.safetensors", dir);
    snprintf(to, sizeof to, "%s/alpha.old", dir);
    ck_assert_int_eq(rename(path, to), 0);
    ck_assert_msg(listed_within_1s(r, "alpha", 0), "alpha still listed 1 s after it was renamed away");
    e2g_registry_close(r); /* stops the watcher */
}
END_TEST

START_TEST(test_names) {
    const char *good[] = {"winter", "oil-paint", "a.b_c", "X9"};
    const char *bad[] = {"", ".hidden", "a/b", "..", "a b", "x\n",
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) ck_assert(e2g_concept_name_ok(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) ck_assert_msg(!e2g_concept_name_ok(bad[i]), "%s", bad[i]);
}
END_TEST

/* The adapter's identity comes from its bytes: the same bytes loaded twice
 * (from memory or from a file, a re-upload, a re-scan) have one lora id,
 * other bytes another, and no content id is a counter id of e2g_lora_new. */
static unsigned long long served_id(e2g_registry *r, const char *name) {
    char err[E2G_ERR_LEN];
    e2g_request req;
    ck_assert_msg(e2g_registry_acquire(r, &req, name, 1.0f, err) == 0, "%s", err);
    unsigned long long id = req.edit.terms[0].lora->id;
    e2g_registry_release(r, &req);
    return id;
}

START_TEST(test_content_identity) {
    char err[E2G_ERR_LEN], path[512];
    e2g_adapter *a, *b, *c;
    ck_assert_msg(e2g_adapter_load_mem(&a, base, adapter_bytes, adapter_len, "the bytes", err) == 0, "%s", err);
    ck_assert_msg(e2g_adapter_load_mem(&b, base, adapter_bytes, adapter_len, "the bytes", err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/alpha.safetensors", dir);
    ck_assert_msg(e2g_adapter_load(&c, base, path, err) == 0, "%s", err);
    ck_assert(a->lora != b->lora);
    ck_assert_uint_eq(a->lora->id, b->lora->id);
    ck_assert_uint_eq(a->lora->id, c->lora->id);
    e2g_lora *made = e2g_lora_new(&base->cfg, a->lora->rank, a->lora->scale);
    ck_assert_uint_ne(made->id, a->lora->id);
    e2g_lora_free(made);
    e2g_adapter_free(b), e2g_adapter_free(c);
    /* one bit of one weight changed: another adapter */
    uint8_t *other = malloc(adapter_len);
    memcpy(other, adapter_bytes, adapter_len);
    other[adapter_len - 4] ^= 1; /* the low mantissa byte of the last float */
    ck_assert_msg(e2g_adapter_load_mem(&b, base, other, adapter_len, "the bytes", err) == 0, "%s", err);
    ck_assert_uint_ne(a->lora->id, b->lora->id);
    e2g_adapter_free(b);
    /* a file that is not an adapter is named by `what` */
    ck_assert_int_eq(e2g_adapter_load_mem(&b, base, other, adapter_len / 2, "the upload", err), -1);
    ck_assert_msg(strncmp(err, "the upload: ", 12) == 0, "%s", err);
    /* the registry: a re-upload of the same bytes and another name with
     * the same bytes serve the same identity; other bytes another */
    e2g_registry *r = NULL;
    int created;
    ck_assert_int_eq(e2g_registry_open(&r, base, dir, 1 << 30, err), 0);
    ck_assert_uint_eq(served_id(r, "alpha"), a->lora->id);
    ck_assert_uint_eq(served_id(r, "beta"), a->lora->id);
    ck_assert_int_eq(e2g_registry_put(r, "alpha", adapter_bytes, adapter_len, &created, err), 0);
    ck_assert_uint_eq(served_id(r, "alpha"), a->lora->id);
    ck_assert_int_eq(e2g_registry_put(r, "alpha", other, adapter_len, &created, err), 0);
    ck_assert_uint_ne(served_id(r, "alpha"), a->lora->id);
    e2g_registry_close(r);
    free(other);
    e2g_adapter_free(a);
}
END_TEST

int main(void) {
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_scan_and_list);
    tcase_add_test(tc, test_acquire_release_and_eviction);
    tcase_add_test(tc, test_put_delete_rescan);
    tcase_add_test(tc, test_watch_directory);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_content_identity);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
