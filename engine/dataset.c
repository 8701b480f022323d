/* dataset.c — loading paired datasets and drawing batches (see dataset.h). */
#include "dataset.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "image.h"

void e2g_dataset_free(e2g_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n_concepts; i++) free(d->concepts[i]);
    free(d->concepts);
    free(d->pairs);
    free(d->pixels);
    free(d);
}

/* Splits a comma list into names (strdup'd); returns the count. */
static int split_names(const char *list, char ***out) {
    char *copy = strdup(list), *save = NULL;
    int n = 0;
    *out = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        *out = realloc(*out, (n + 1) * sizeof(char *));
        (*out)[n++] = strdup(tok);
    }
    free(copy);
    return n;
}

/* Reads one crop×crop RGB image into dst. */
static int read_crop(uint8_t *dst, const char *path, int crop, char *err) {
    e2g_image im = {0};
    if (e2g_image_read_file(&im, path, (long)crop * crop, err)) return -1;
    int ok = im.width == crop && im.height == crop;
    if (ok) memcpy(dst, im.rgb, (size_t)crop * crop * 3);
    e2g_image_free(&im);
    return ok ? 0 : e2g_fail(err, "%s is %dx%d, the dataset's crops are %dx%d", path, im.width,
                             im.height, crop, crop);
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* The concept names to load: the asked ones, each checked against the
 * manifest, or all of the manifest's. */
static int pick_concepts(e2g_dataset *d, json_t *manifest, const char *wanted, char *err) {
    json_t *list = json_object_get(manifest, "concepts");
    if (!json_is_array(list)) return e2g_fail(err, "manifest has no concept list");
    if (!wanted) {
        d->n_concepts = (int)json_array_size(list);
        d->concepts = e2g_xcalloc(d->n_concepts, sizeof(char *));
        for (int i = 0; i < d->n_concepts; i++) {
            const char *name = json_string_value(json_object_get(json_array_get(list, i), "name"));
            if (!name) return e2g_fail(err, "manifest concept %d has no name", i);
            d->concepts[i] = strdup(name);
        }
        return 0;
    }
    d->n_concepts = split_names(wanted, &d->concepts);
    for (int i = 0; i < d->n_concepts; i++) {
        int found = 0;
        for (size_t j = 0; j < json_array_size(list) && !found; j++) {
            const char *name = json_string_value(json_object_get(json_array_get(list, j), "name"));
            found = name && strcmp(name, d->concepts[i]) == 0;
        }
        if (!found) return e2g_fail(err, "the dataset has no concept '%s'", d->concepts[i]);
    }
    return d->n_concepts ? 0 : e2g_fail(err, "no concept asked for");
}

int e2g_dataset_load(e2g_dataset **out, const char *dir, const char *split, const char *concepts,
                     char *err) {
    char path[4096];
    json_error_t jerr;
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_t *manifest = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!manifest) return e2g_fail(err, "%s: %s (line %d)", path, jerr.text, jerr.line);
    e2g_dataset *d = e2g_xcalloc(1, sizeof *d);
    json_t *ids = json_object_get(json_object_get(json_object_get(manifest, "splits"), split), "ids");
    d->crop = (int)json_integer_value(json_object_get(manifest, "crop"));
    if (d->crop < 8 || d->crop > 4096 || d->crop % 8) {
        e2g_fail(err, "manifest crop must be a multiple of 8 in 8..4096");
        goto fail;
    }
    if (!json_is_array(ids)) {
        e2g_fail(err, "manifest has no id list for split '%s'", split);
        goto fail;
    }
    if (pick_concepts(d, manifest, concepts, err)) goto fail;
    size_t n_ids = json_array_size(ids), img = (size_t)d->crop * d->crop * 3;
    /* one slot per id for the source, one per (concept, id) for the target */
    d->pixels = e2g_xmalloc(img * n_ids * (1 + d->n_concepts));
    d->pairs = e2g_xmalloc(sizeof(e2g_pair) * n_ids * d->n_concepts);
    for (size_t i = 0; i < n_ids; i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        if (!id || strchr(id, '/')) {
            e2g_fail(err, "manifest id %zu of split '%s' is not a plain name", i, split);
            goto fail;
        }
        uint8_t *src = d->pixels + img * i * (1 + d->n_concepts);
        int loaded_src = 0;
        for (int c = 0; c < d->n_concepts; c++) {
            snprintf(path, sizeof path, "%s/%s/%s/%s.png", dir, split, d->concepts[c], id);
            if (!file_exists(path)) continue;
            if (!loaded_src) {
                char src_path[4096];
                snprintf(src_path, sizeof src_path, "%s/%s/src/%s.png", dir, split, id);
                if (read_crop(src, src_path, d->crop, err)) goto fail;
                loaded_src = 1;
            }
            uint8_t *dst = src + img * (1 + c);
            if (read_crop(dst, path, d->crop, err)) goto fail;
            d->pairs[d->n_pairs++] = (e2g_pair){c, src, dst};
        }
    }
    if (!d->n_pairs) {
        e2g_fail(err, "split '%s' of %s has no pairs for the concepts asked for", split, dir);
        goto fail;
    }
    json_decref(manifest);
    *out = d;
    return 0;
fail:
    json_decref(manifest);
    e2g_dataset_free(d);
    return -1;
}

void e2g_dataset_select(e2g_dataset *d, const unsigned char *keep) {
    int n = 0;
    for (int i = 0; i < d->n_pairs; i++)
        if (keep[i]) d->pairs[n++] = d->pairs[i];
    d->n_pairs = n;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Position `pos` of epoch `epoch`'s shuffle of n items (Fisher–Yates). */
static void epoch_permutation(int *perm, int n, unsigned long long seed, long epoch) {
    for (int i = 0; i < n; i++) perm[i] = i;
    uint64_t state = mix64(seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch + 1);
    for (int i = n - 1; i > 0; i--) {
        state = mix64(state + 0x9E3779B97F4A7C15ull);
        int j = (int)(state % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
}

void e2g_dataset_batch(const e2g_dataset *d, unsigned long long seed, long step, int batch,
                       int *indices) {
    int n = d->n_pairs;
    int *perm = e2g_xmalloc(n * sizeof(int));
    long have_epoch = -1;
    for (int j = 0; j < batch; j++) {
        long g = step * batch + j, epoch = g / n;
        if (epoch != have_epoch) epoch_permutation(perm, n, seed, have_epoch = epoch);
        indices[j] = perm[g % n];
    }
    free(perm);
}

void e2g_pairs_to_tensors(const e2g_dataset *d, const int *indices, int n, float *src, float *dst) {
    size_t img = (size_t)d->crop * d->crop * 3;
    for (int j = 0; j < n; j++) {
        const e2g_pair *p = &d->pairs[indices[j]];
        e2g_image s = {d->crop, d->crop, (uint8_t *)p->src}, t = {d->crop, d->crop, (uint8_t *)p->dst};
        e2g_image_to_tensor(src + j * img, &s, d->crop, d->crop);
        if (dst) e2g_image_to_tensor(dst + j * img, &t, d->crop, d->crop);
    }
}
