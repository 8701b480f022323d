/* dataset.c — loading paired datasets (a built dataset folder, or a folder
 * of user pairs cropped in memory) and drawing batches (see dataset.h). */
#include "dataset.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
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

int e2g_dataset_weigh(e2g_dataset *d, const char *weights, char *err) {
    char **items;
    int n_items = split_names(weights, &items), rc = 0;
    int *times = e2g_xmalloc(d->n_concepts * sizeof(int));
    for (int c = 0; c < d->n_concepts; c++) times[c] = 1;
    for (int i = 0; i < n_items && !rc; i++) {
        char *eq = strchr(items[i], '='), *end = NULL;
        long k = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || end == eq + 1 || *end || k < 1 || k > 100) {
            rc = e2g_fail(err, "concept weight '%s' is not NAME=K with K an integer 1..100", items[i]);
            break;
        }
        *eq = '\0';
        int c = 0;
        while (c < d->n_concepts && strcmp(d->concepts[c], items[i])) c++;
        if (c == d->n_concepts) rc = e2g_fail(err, "concept weight for '%s', which is not trained", items[i]);
        else times[c] = (int)k;
    }
    if (!n_items) rc = e2g_fail(err, "no concept weight given");
    if (!rc) { /* each pair's copies, in the original order */
        int n = 0;
        for (int i = 0; i < d->n_pairs; i++) n += times[d->pairs[i].concept];
        e2g_pair *pairs = e2g_xmalloc((size_t)n * sizeof *pairs);
        n = 0;
        for (int i = 0; i < d->n_pairs; i++)
            for (int k = 0; k < times[d->pairs[i].concept]; k++) pairs[n++] = d->pairs[i];
        free(d->pairs);
        d->pairs = pairs, d->n_pairs = n;
    }
    for (int i = 0; i < n_items; i++) free(items[i]);
    free(items);
    free(times);
    return rc;
}

void e2g_dataset_select(e2g_dataset *d, const unsigned char *keep) {
    int n = 0;
    for (int i = 0; i < d->n_pairs; i++)
        if (keep[i]) d->pairs[n++] = d->pairs[i];
    d->n_pairs = n;
}

/* Position `pos` of epoch `epoch`'s shuffle of n items (Fisher–Yates). */
static void epoch_permutation(int *perm, int n, unsigned long long seed, long epoch) {
    for (int i = 0; i < n; i++) perm[i] = i;
    uint64_t state = e2g_mix64(seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch + 1);
    for (int i = n - 1; i > 0; i--) {
        state = e2g_mix64(state + 0x9E3779B97F4A7C15ull);
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

/* ---- datasets from a folder of user pairs ----------------------------------------- */

void e2g_pairs_defaults(e2g_pairs_opts *o) {
    *o = (e2g_pairs_opts){.crop = 128, .train_crops = 1024, .val_fraction = 0.2, .seed = 1,
                          .max_pixels = 16L << 20};
}

typedef struct {
    char stem[256];
    char src[4096], dst[4096];
} pair_files;

/* STEM of NAME if NAME is STEM.EXT with an image extension (and, when role
 * is set, STEM.ROLE.EXT); 0 otherwise. */
static int image_stem(const char *name, const char *role, char *stem, size_t len) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || e2g_image_format_from_name(dot + 1) == E2G_IMAGE_UNKNOWN) return 0;
    size_t n = (size_t)(dot - name);
    if (role) {
        size_t r = strlen(role);
        if (n < r + 2 || name[n - r - 1] != '.' || strncmp(name + n - r, role, r)) return 0;
        n -= r + 1;
    }
    if (n >= len) return 0;
    memcpy(stem, name, n);
    stem[n] = '\0';
    return 1;
}

/* Finds or adds the entry for stem. */
static pair_files *pair_entry(pair_files **list, int *n, const char *stem) {
    for (int i = 0; i < *n; i++)
        if (strcmp((*list)[i].stem, stem) == 0) return &(*list)[i];
    *list = realloc(*list, (size_t)(*n + 1) * sizeof **list);
    E2G_ASSERT(*list);
    pair_files *p = &(*list)[(*n)++];
    memset(p, 0, sizeof *p);
    snprintf(p->stem, sizeof p->stem, "%s", stem);
    return p;
}

/* Adds the images of folder dir: as role `role` of stem (sub-folder form,
 * role_in_name 0) or as STEM.src/STEM.dst files (role_in_name 1). */
static int scan_pair_folder(const char *dir, const char *role, int role_in_name, pair_files **list,
                            int *n, char *err) {
    DIR *d = opendir(dir);
    if (!d) return e2g_fail(err, "cannot open %s", dir);
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        static const char *const roles[] = {"src", "dst"};
        for (int r = 0; r < 2 && !rc; r++) {
            const char *want = role_in_name ? roles[r] : role;
            if (!role_in_name && r) break;
            char stem[256];
            if (!image_stem(e->d_name, role_in_name ? want : NULL, stem, sizeof stem)) continue;
            pair_files *p = pair_entry(list, n, stem);
            char *slot = strcmp(want, "src") == 0 ? p->src : p->dst;
            if (slot[0]) rc = e2g_fail(err, "two %s images named %s in %s", want, stem, dir);
            else snprintf(slot, sizeof p->src, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
    return rc;
}

static int compare_stems(const void *a, const void *b) {
    return strcmp(((const pair_files *)a)->stem, ((const pair_files *)b)->stem);
}

/* The pairs of dir, sorted by stem; every image has its partner. */
static int find_pairs(const char *dir, pair_files **list, int *n, char *err) {
    char sub[4096];
    *list = NULL, *n = 0;
    snprintf(sub, sizeof sub, "%s/src", dir);
    DIR *probe = opendir(sub);
    int rc;
    if (probe) {
        closedir(probe);
        rc = scan_pair_folder(sub, "src", 0, list, n, err);
        snprintf(sub, sizeof sub, "%s/dst", dir);
        if (!rc) rc = scan_pair_folder(sub, "dst", 0, list, n, err);
    } else {
        rc = scan_pair_folder(dir, NULL, 1, list, n, err);
    }
    for (int i = 0; i < *n && !rc; i++)
        if (!(*list)[i].src[0] || !(*list)[i].dst[0])
            rc = e2g_fail(err, "pair '%s' has no %s image", (*list)[i].stem, (*list)[i].src[0] ? "dst" : "src");
    if (!rc && *n < 2)
        rc = e2g_fail(err, "%s holds %d pair(s); at least 2 are needed (STEM.src.png + STEM.dst.png, "
                           "or src/STEM.png + dst/STEM.png)", dir, *n);
    if (!rc) qsort(*list, (size_t)*n, sizeof **list, compare_stems);
    return rc;
}

int e2g_pairs_count(const char *dir, char *err) {
    pair_files *files;
    int n, rc = find_pairs(dir, &files, &n, err);
    free(files);
    return rc ? -1 : n;
}

/* Antialiased linear resampling weights along one axis: out[i] =
 * Σ w[i][j]·in[first[i] + j], for `side` input samples (from offset) onto
 * `crop` outputs; the filter widens with the downscale factor. */
typedef struct {
    int *first, *count;
    float *w;
    int taps;
} axis_weights;

static void axis_weights_init(axis_weights *a, int offset, int side, int crop) {
    double scale = (double)side / crop, support = scale > 1 ? scale : 1;
    a->taps = (int)ceil(support) * 2 + 1;
    a->first = e2g_xmalloc(crop * sizeof(int));
    a->count = e2g_xmalloc(crop * sizeof(int));
    a->w = e2g_xcalloc((size_t)crop * a->taps, sizeof(float));
    for (int i = 0; i < crop; i++) {
        double centre = (i + 0.5) * scale;
        int lo = (int)floor(centre - support), hi = (int)ceil(centre + support);
        if (lo < 0) lo = 0;
        if (hi > side) hi = side;
        if (hi - lo > a->taps) hi = lo + a->taps;
        double sum = 0;
        for (int j = lo; j < hi; j++) {
            double t = 1 - fabs(j + 0.5 - centre) / support;
            a->w[i * a->taps + (j - lo)] = (float)(t > 0 ? t : 0);
            sum += t > 0 ? t : 0;
        }
        for (int j = lo; j < hi; j++) a->w[i * a->taps + (j - lo)] /= (float)(sum > 0 ? sum : 1);
        a->first[i] = lo + offset, a->count[i] = hi - lo;
    }
}

static void axis_weights_free(axis_weights *a) { free(a->first), free(a->count), free(a->w); }

/* The square (x, y, side) of im resampled to crop × crop into out,
 * mirrored left-right when flip is set. */
static void resample_square(const e2g_image *im, int x, int y, int side, int crop, int flip, uint8_t *out) {
    axis_weights ax, ay;
    axis_weights_init(&ax, x, side, crop);
    axis_weights_init(&ay, y, side, crop);
    float *rows = e2g_xmalloc((size_t)side * crop * 3 * sizeof(float));
    for (int r = 0; r < side; r++) { /* horizontal pass over the square's rows */
        const uint8_t *in = im->rgb + (size_t)(y + r) * im->width * 3;
        for (int i = 0; i < crop; i++)
            for (int c = 0; c < 3; c++) {
                float v = 0;
                for (int j = 0; j < ax.count[i]; j++) v += ax.w[i * ax.taps + j] * in[(ax.first[i] + j) * 3 + c];
                rows[((size_t)r * crop + i) * 3 + c] = v;
            }
    }
    for (int i = 0; i < crop; i++) /* vertical pass */
        for (int k = 0; k < crop; k++)
            for (int c = 0; c < 3; c++) {
                float v = 0;
                for (int j = 0; j < ay.count[i]; j++)
                    v += ay.w[i * ay.taps + j] * rows[((size_t)(ay.first[i] - y + j) * crop + k) * 3 + c];
                int q = (int)lrintf(v);
                out[((size_t)i * crop + (flip ? crop - 1 - k : k)) * 3 + c] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
            }
    free(rows);
    axis_weights_free(&ax), axis_weights_free(&ay);
}

/* An empty one-concept dataset with room for n crops. */
static e2g_dataset *pairs_dataset_new(const char *concept, int crop, int n) {
    e2g_dataset *d = e2g_xcalloc(1, sizeof *d);
    d->crop = crop;
    d->n_concepts = 1;
    d->concepts = e2g_xmalloc(sizeof(char *));
    d->concepts[0] = strdup(concept);
    d->pixels = e2g_xmalloc((size_t)crop * crop * 3 * 2 * (size_t)n);
    d->pairs = e2g_xmalloc(sizeof(e2g_pair) * (size_t)n);
    return d;
}

/* Adds the crop (x, y, side, flip) of a decoded pair to d. */
static void add_crop(e2g_dataset *d, const e2g_image *src, const e2g_image *dst, int x, int y, int side,
                     int flip) {
    size_t img = (size_t)d->crop * d->crop * 3;
    uint8_t *s = d->pixels + img * 2 * d->n_pairs, *t = s + img;
    resample_square(src, x, y, side, d->crop, flip, s);
    resample_square(dst, x, y, side, d->crop, flip, t);
    d->pairs[d->n_pairs++] = (e2g_pair){0, s, t};
}

static int read_pair(const pair_files *p, long max_pixels, e2g_image *src, e2g_image *dst, char *err) {
    if (e2g_image_read_file(src, p->src, max_pixels, err) || e2g_image_read_file(dst, p->dst, max_pixels, err))
        return -1;
    if (src->width != dst->width || src->height != dst->height)
        return e2g_fail(err, "pair '%s': src is %dx%d but dst is %dx%d", p->stem, src->width, src->height,
                        dst->width, dst->height);
    return 0;
}

int e2g_dataset_from_pairs(e2g_dataset **train, e2g_dataset **val, const char *dir,
                           const char *concept, const e2g_pairs_opts *o, char *err) {
    *train = *val = NULL;
    if (o->crop < 8 || o->crop % 8) return e2g_fail(err, "the crop must be a positive multiple of 8");
    if (o->train_crops < 1) return e2g_fail(err, "at least one training crop is needed");
    pair_files *files;
    int n;
    if (find_pairs(dir, &files, &n, err)) {
        free(files);
        return -1;
    }
    int *order = e2g_xmalloc(n * sizeof(int));
    epoch_permutation(order, n, o->seed, -7); /* the split: its own stream of the seed */
    int n_val = (int)lrint(o->val_fraction * n);
    if (n_val < 1) n_val = 1;
    if (n_val > n - 1) n_val = n - 1;
    e2g_dataset *t = pairs_dataset_new(concept, o->crop, o->train_crops);
    e2g_dataset *v = pairs_dataset_new(concept, o->crop, 2 * n_val);
    uint64_t state = e2g_mix64(o->seed ^ 0x5851F42D4C957F2Dull);
    int rc = 0;
    for (int k = 0; k < n && !rc; k++) {
        e2g_image src = {0}, dst = {0};
        const pair_files *p = &files[order[k]];
        rc = read_pair(p, o->max_pixels, &src, &dst, err);
        int shortest = src.width < src.height ? src.width : src.height;
        int low = o->crop < shortest ? o->crop : shortest;
        if (!rc && k < n_val) { /* fixed centred views: the short side, and half of it */
            for (int view = 0; view < 2; view++) {
                int side = view ? (shortest / 2 > low ? shortest / 2 : low) : shortest;
                add_crop(v, &src, &dst, (src.width - side) / 2, (src.height - side) / 2, side, 0);
            }
        }
        /* training crops of this pair: every (n − n_val)-th of them */
        for (int c = k - n_val; !rc && k >= n_val && c < o->train_crops; c += n - n_val) {
            uint64_t r1 = state = e2g_mix64(state + 1), r2 = state = e2g_mix64(state + 1);
            int side = low + (int)(r1 % (uint64_t)(shortest - low + 1));
            int x = (int)((r2 & 0xFFFFFFFF) % (uint64_t)(src.width - side + 1));
            int y = (int)((r2 >> 32) % (uint64_t)(src.height - side + 1));
            add_crop(t, &src, &dst, x, y, side, (int)((r1 >> 63) & 1));
        }
        e2g_image_free(&src), e2g_image_free(&dst);
    }
    free(order);
    free(files);
    if (rc) {
        e2g_dataset_free(t), e2g_dataset_free(v);
        return -1;
    }
    *train = t, *val = v;
    return 0;
}
