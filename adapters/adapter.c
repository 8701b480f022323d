/* adapter.c — loading and validating LoRA adapters, and resolving concept
 * requests into per-sample edits (see adapter.h). */
#include "adapter.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "safetensors.h"

#define PEFT_PREFIX "base_model.model."
#define CONCEPT_KEY "concept.embedding"

void e2g_adapter_free(e2g_adapter *a) {
    if (!a) return;
    free(a->concept);
    e2g_lora_free(a->lora);
    free(a);
}

/* The §3 layer name of a module path: "enc2.conv" → "enc2". */
static void layer_name(const char *module, char *out, size_t n) {
    snprintf(out, n, "%s", module);
    size_t len = strlen(out);
    if (len > 5 && strcmp(out + len - 5, ".conv") == 0) out[len - 5] = '\0';
}

static int ends_with_component(const char *s, const char *key) {
    size_t ls = strlen(s), lk = strlen(key);
    return ls > lk && s[ls - lk - 1] == '.' && strcmp(s + ls - lk, key) == 0;
}

/* PEFT's rank_pattern / alpha_pattern rule: an exact match of the module
 * path (or its §3 layer name) wins; otherwise the first key that matches a
 * dotted suffix.  Returns the numeric value or dflt. */
static double pattern_value(json_t *pattern, const char *module, double dflt) {
    if (!json_is_object(pattern)) return dflt;
    char layer[64];
    layer_name(module, layer, sizeof layer);
    json_t *v = json_object_get(pattern, module);
    if (!v) v = json_object_get(pattern, layer);
    const char *key;
    json_t *value;
    json_object_foreach(pattern, key, value) {
        if (v) break;
        if (ends_with_component(module, key) || ends_with_component(layer, key)) v = value;
    }
    return json_is_number(v) ? json_number_value(v) : dflt;
}

/* Splits "base_model.model.<module>.lora_X.weight" into the crucial layer
 * id and X ('A' or 'B'); -1 for any other key. */
static int parse_lora_key(const char *key, char *which) {
    size_t lp = strlen(PEFT_PREFIX), lk = strlen(key), suffix = strlen(".lora_A.weight");
    if (strncmp(key, PEFT_PREFIX, lp) != 0 || lk <= lp + suffix) return -1;
    const char *tail = key + lk - suffix;
    if (strcmp(tail, ".lora_A.weight") != 0 && strcmp(tail, ".lora_B.weight") != 0) return -1;
    *which = tail[6];
    for (int i = 0; i < E2G_N_CRUCIAL; i++) {
        const char *name = e2g_crucial_name(i);
        if (strlen(name) == (size_t)(tail - key - lp) && strncmp(key + lp, name, tail - key - lp) == 0)
            return i;
    }
    return -1;
}

static int shape_is(const e2g_st_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

static void shape_str(const e2g_st_tensor *t, char *buf, size_t n) {
    size_t used = snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && used < n; i++)
        used += snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* Ranks from the file's lora_A tensors; also rejects unknown keys. */
static int collect_ranks(const e2g_st_file *f, int *rank, char *err) {
    memset(rank, 0, E2G_N_CRUCIAL * sizeof(int));
    int has_b[E2G_N_CRUCIAL] = {0};
    for (int i = 0; i < e2g_st_count(f); i++) {
        const e2g_st_tensor *t = e2g_st_at(f, i);
        if (strcmp(t->name, CONCEPT_KEY) == 0) continue;
        char which;
        int layer = parse_lora_key(t->name, &which);
        if (layer < 0) return e2g_fail(err, "unexpected tensor '%s' in an adapter", t->name);
        if (which == 'B') {
            has_b[layer] = 1;
            continue;
        }
        if (t->ndim < 2 || t->shape[0] < 1 || t->shape[0] > 4096)
            return e2g_fail(err, "tensor '%s' has no usable rank", t->name);
        rank[layer] = (int)t->shape[0];
    }
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        if (!rank[l] != !has_b[l])
            return e2g_fail(err, "layer %s has lora_%s without lora_%s", e2g_crucial_name(l),
                            rank[l] ? "A" : "B", rank[l] ? "B" : "A");
    return 0;
}

/* Reads A and B of one layer with the shapes the base layer implies. */
static int read_layer(const e2g_st_file *f, const e2g_gen_config *cfg, e2g_lora *l, int layer,
                      char *err) {
    e2g_layer_shape s;
    e2g_crucial_shape(cfg, layer, &s);
    int r = l->rank[layer];
    char name[96], got[64];
    int64_t a_shape[4] = {r, s.cin, s.k, s.k}, b_shape[4] = {s.cout, r, 1, 1};
    int ndim = s.k ? 4 : 2;
    const char *part[2] = {"A", "B"};
    for (int j = 0; j < 2; j++) {
        snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_%s.weight", e2g_crucial_name(layer), part[j]);
        const e2g_st_tensor *t = e2g_st_find(f, name);
        const int64_t *want = j ? b_shape : a_shape;
        if (!shape_is(t, ndim, want)) {
            shape_str(t, got, sizeof got);
            return e2g_fail(err, "tensor '%s' has shape %s; layer %s of this base needs [%lld,%lld%s]",
                            name, got, e2g_crucial_name(layer), (long long)want[0],
                            (long long)want[1], s.k ? ",k,k" : "");
        }
        e2g_st_to_f32(t, j ? l->B[layer] : l->A[layer]);
    }
    return 0;
}

/* The adapter's identity for host and device caches: the first 8 bytes of
 * the SHA-256 of its file's bytes, with the top bit set so that it never
 * equals a counter id of e2g_lora_new (adapters made in memory). */
static unsigned long long content_id(const e2g_st_file *f) {
    char hex[65];
    e2g_st_sha256(f, hex);
    hex[16] = '\0';
    return strtoull(hex, NULL, 16) | (1ULL << 63);
}

/* Validates a parsed adapter file against base and builds the adapter;
 * takes f.  `what` names the file in the messages. */
static int from_st(e2g_adapter **out, const e2g_model *base, e2g_st_file *f, const char *what,
                   char *err) {
    json_t *config = NULL;
    e2g_adapter *a = NULL;
    const char *format = e2g_st_meta(f, "format"), *concept = e2g_st_meta(f, "concept");
    const char *sha = e2g_st_meta(f, "base_sha256"), *config_text = e2g_st_meta(f, "adapter_config");
    int rank[E2G_N_CRUCIAL];
    float scale[E2G_N_CRUCIAL] = {0};
    if (!format || strcmp(format, "e2gan-lora") != 0) {
        e2g_fail(err, "%s is not an e2gan adapter (metadata format must be \"e2gan-lora\")", what);
        goto fail;
    }
    if (!concept || !*concept || strlen(concept) > 64) {
        e2g_fail(err, "adapter metadata concept is missing or longer than 64 bytes");
        goto fail;
    }
    if (!sha || strcmp(sha, base->sha256) != 0) {
        e2g_fail(err, "adapter '%s' was trained on another base (base_sha256 %.12s…, this base %.12s…)",
                 concept, sha ? sha : "missing", base->sha256);
        goto fail;
    }
    json_error_t jerr;
    config = config_text ? json_loads(config_text, 0, &jerr) : NULL;
    json_t *r_default = json_object_get(config, "r"), *alpha_default = json_object_get(config, "lora_alpha");
    if (!json_is_object(config) || !json_is_integer(r_default) || !json_is_number(alpha_default)) {
        e2g_fail(err, "adapter_config must be a JSON object with integer r and numeric lora_alpha");
        goto fail;
    }
    if (collect_ranks(f, rank, err)) goto fail;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        if (!rank[l]) continue;
        double r = pattern_value(json_object_get(config, "rank_pattern"), e2g_crucial_name(l),
                                 (double)json_integer_value(r_default));
        double alpha = pattern_value(json_object_get(config, "alpha_pattern"), e2g_crucial_name(l),
                                     json_number_value(alpha_default));
        if (r != rank[l]) {
            e2g_fail(err, "layer %s: lora_A has rank %d but adapter_config gives %g",
                     e2g_crucial_name(l), rank[l], r);
            goto fail;
        }
        scale[l] = (float)(alpha / r);
    }
    a = e2g_xcalloc(1, sizeof *a);
    a->concept = strdup(concept);
    a->lora = e2g_lora_new(&base->cfg, rank, scale);
    a->lora->id = content_id(f);
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        if (rank[l] && read_layer(f, &base->cfg, a->lora, l, err)) goto fail;
    int64_t ctx_shape[2] = {base->cfg.ctx_tokens, e2g_gen_c4(&base->cfg)};
    if (e2g_st_read_f32(f, CONCEPT_KEY, 2, ctx_shape, a->lora->concept, err)) goto fail;
    a->file_bytes = 0;
    for (int i = 0; i < e2g_st_count(f); i++) a->file_bytes += e2g_st_at(f, i)->nbytes;
    json_decref(config);
    e2g_st_close(f);
    *out = a;
    return 0;
fail:
    json_decref(config);
    e2g_st_close(f);
    e2g_adapter_free(a);
    return -1;
}

int e2g_adapter_load(e2g_adapter **out, const e2g_model *base, const char *path, char *err) {
    e2g_st_file *f = NULL;
    if (e2g_st_open(&f, path, err)) return -1;
    return from_st(out, base, f, path, err);
}

int e2g_adapter_load_mem(e2g_adapter **out, const e2g_model *base, const uint8_t *data, size_t n,
                         const char *what, char *err) {
    char msg[E2G_ERR_LEN];
    e2g_st_file *f = NULL;
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) return e2g_fail(err, "%s: out of memory for %zu bytes", what, n);
    memcpy(copy, data, n);
    if (e2g_st_parse(&f, copy, n, msg)) return e2g_fail(err, "%s: %s", what, msg);
    return from_st(out, base, f, what, err);
}

/* ---- writing ------------------------------------------------------------------ */

int e2g_adapter_save(const char *path, const e2g_model *base, const e2g_lora *lora,
                     const char *concept, const char *const *extra_meta, char *err) {
    e2g_st_writer *w = e2g_st_writer_new();
    json_t *targets = json_array(), *ranks = json_object(), *alphas = json_object();
    int r_default = 0, rc = -1;
    double alpha_default = 0;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        if (!lora->rank[l]) continue;
        e2g_layer_shape s;
        e2g_crucial_shape(&base->cfg, l, &s);
        int r = lora->rank[l];
        if (!r_default) r_default = r, alpha_default = lora->scale[l] * r;
        const char *module = e2g_crucial_name(l);
        json_array_append_new(targets, json_string(module));
        json_object_set_new(ranks, module, json_integer(r));
        json_object_set_new(alphas, module, json_real(lora->scale[l] * r));
        char name[96];
        int64_t a_shape[4] = {r, s.cin, s.k, s.k}, b_shape[4] = {s.cout, r, 1, 1};
        int ndim = s.k ? 4 : 2;
        snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_A.weight", module);
        if (e2g_st_writer_add(w, name, E2G_DTYPE_F32, ndim, a_shape, lora->A[l], err)) goto out;
        snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_B.weight", module);
        if (e2g_st_writer_add(w, name, E2G_DTYPE_F32, ndim, b_shape, lora->B[l], err)) goto out;
    }
    int64_t ctx_shape[2] = {base->cfg.ctx_tokens, e2g_gen_c4(&base->cfg)};
    if (e2g_st_writer_add(w, CONCEPT_KEY, E2G_DTYPE_F32, 2, ctx_shape, lora->concept, err)) goto out;
    /* PEFT's adapter_config: every layer's rank and alpha spelled out */
    json_t *config = json_pack("{s:s,s:n,s:i,s:f,s:f,s:s,s:O,s:O,s:O}", "peft_type", "LORA",
                               "task_type", "r", r_default, "lora_alpha", alpha_default,
                               "lora_dropout", 0.0, "bias", "none", "target_modules", targets,
                               "rank_pattern", ranks, "alpha_pattern", alphas);
    char *config_text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(config);
    int bad = e2g_st_writer_meta(w, "format", "e2gan-lora", err) ||
              e2g_st_writer_meta(w, "adapter_config", config_text, err) ||
              e2g_st_writer_meta(w, "concept", concept, err) ||
              e2g_st_writer_meta(w, "base_sha256", base->sha256, err);
    free(config_text);
    for (int i = 0; !bad && extra_meta && extra_meta[i]; i += 2)
        bad = e2g_st_writer_meta(w, extra_meta[i], extra_meta[i + 1], err);
    if (!bad) rc = e2g_st_writer_save(w, path, err);
out:
    json_decref(targets), json_decref(ranks), json_decref(alphas);
    e2g_st_writer_free(w);
    return rc;
}

/* ---- requests --------------------------------------------------------------- */

void e2g_request_free(e2g_request *req) {
    free(req->context);
    req->context = NULL;
}

int e2g_request_resolve(e2g_request *req, const e2g_model *base, e2g_adapter *const *adapters,
                        int n_adapters, const char *spec, float strength, char *err) {
    size_t ctx_n = (size_t)base->cfg.ctx_tokens * e2g_gen_c4(&base->cfg);
    memset(req, 0, sizeof *req);
    if (!(strength >= 0.0f && strength <= 2.0f))
        return e2g_fail(err, "strength must be between 0 and 2");
    if (!spec || !*spec || strlen(spec) > 512) return e2g_fail(err, "concept must be 1..512 bytes");
    char buf[520];
    snprintf(buf, sizeof buf, "%s", spec);
    int blend = strchr(buf, ':') != NULL, parts = 0;
    size_t len = strlen(buf);
    req->context = e2g_xcalloc(ctx_n, sizeof(float));
    if (buf[0] == ',' || buf[len - 1] == ',' || strstr(buf, ",,")) goto bad_spec;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        float weight = 1.0f;
        char *colon = strchr(tok, ':');
        if (blend) {
            char *end;
            if (!colon || !*(colon + 1)) goto bad_spec;
            *colon = '\0';
            weight = strtof(colon + 1, &end);
            if (*end || !isfinite(weight) || weight < 0.0f || weight > 1.0f) goto bad_spec;
        }
        if (++parts > E2G_MAX_TERMS || (!blend && parts > 1)) goto bad_spec;
        const float *ctx = NULL;
        int k = e2g_model_concept(base, tok);
        if (k >= 0) ctx = e2g_model_context(base, k);
        for (int i = 0; !ctx && i < n_adapters; i++)
            if (strcmp(adapters[i]->concept, tok) == 0) {
                ctx = adapters[i]->lora->concept;
                req->edit.terms[req->edit.n_terms++] = (e2g_lora_term){adapters[i]->lora, weight * strength};
            }
        if (!ctx) {
            e2g_fail(err, "unknown concept '%s'", tok);
            goto fail;
        }
        for (size_t j = 0; j < ctx_n; j++) req->context[j] += weight * ctx[j];
    }
    if (!parts) goto bad_spec;
    req->edit.context = req->context;
    return 0;
bad_spec:
    e2g_fail(err, "concept must be a name or a blend like \"a:0.7,b:0.3\" of at most %d names "
                  "with weights in 0..1",
             E2G_MAX_TERMS);
fail:
    e2g_request_free(req);
    return -1;
}
