/* model_io.c — base model files (docs/architecture.md §4): loading with full
 * validation of metadata and tensor shapes, saving, and fresh models. */
#include "model_io.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "safetensors.h"

#define DISC_PREFIX "disc."

void e2g_model_free(e2g_model *m) {
    if (!m) return;
    for (int i = 0; i < m->cfg.n_concepts; i++) free(m->concept_names[i]);
    free(m->concept_names);
    free(m->memory);
    free(m->disc_memory);
    free(m);
}

/* Reads "true"/"false" metadata, absent meaning the default. */
static int meta_flag(const e2g_st_file *f, const char *key, int dflt, int *out, char *err) {
    const char *v = e2g_st_meta(f, key);
    if (!v) return *out = dflt, 0;
    if (strcmp(v, "true") == 0) return *out = 1, 0;
    if (strcmp(v, "false") == 0) return *out = 0, 0;
    return e2g_fail(err, "metadata %s must be \"true\" or \"false\", not \"%s\"", key, v);
}

static int meta_int(const e2g_st_file *f, const char *key, int lo, int hi, int *out, char *err) {
    const char *v = e2g_st_meta(f, key);
    if (!v) return e2g_fail(err, "metadata %s is missing", key);
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end || x < lo || x > hi)
        return e2g_fail(err, "metadata %s must be an integer in %d..%d, not \"%s\"", key, lo, hi, v);
    *out = (int)x;
    return 0;
}

/* Reads every entry of a tensor table from f, checking shapes. */
static int read_table(const e2g_st_file *f, const char *prefix, const e2g_tensor_entry *t, int n,
                      char *err) {
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%.8s%.48s", prefix, t[i].name);
        if (e2g_st_read_f32(f, name, t[i].ndim, t[i].shape, *t[i].slot, err)) return -1;
    }
    return 0;
}

static int load_disc(e2g_model *m, const e2g_st_file *f, char *err) {
    const e2g_st_tensor *c1 = e2g_st_find(f, DISC_PREFIX "c1.weight");
    if (!c1) return 0;
    if (c1->ndim != 4 || c1->shape[0] < 1 || c1->shape[0] > 1024)
        return e2g_fail(err, "tensor disc.c1.weight has an unusable shape");
    m->ndf = (int)c1->shape[0];
    m->disc_memory = e2g_xmalloc(e2g_disc_param_count(m->ndf) * sizeof(float));
    e2g_disc_bind(m->ndf, &m->disc, m->disc_memory);
    e2g_tensor_entry t[E2G_DISC_MAX_TENSORS];
    int n = e2g_disc_tensors(m->ndf, &m->disc, t);
    return read_table(f, DISC_PREFIX, t, n, err);
}

static int in_table(const char *name, const char *prefix, const e2g_tensor_entry *t, int n) {
    size_t lp = strlen(prefix);
    if (strncmp(name, prefix, lp) != 0) return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(name + lp, t[i].name) == 0) return 1;
    return 0;
}

/* Every tensor in the file must be one the model reads: a stray tensor
 * means the file was made for another architecture. */
static int check_no_extra(const e2g_st_file *f, const e2g_tensor_entry *g, int gn,
                          const e2g_tensor_entry *d, int dn, char *err) {
    for (int i = 0; i < e2g_st_count(f); i++) {
        const char *name = e2g_st_at(f, i)->name;
        if (!in_table(name, "", g, gn) && !in_table(name, DISC_PREFIX, d, dn))
            return e2g_fail(err, "unexpected tensor '%s' for a base model of this configuration", name);
    }
    return 0;
}

static int parse_concepts(e2g_model *m, const char *json, char *err) {
    json_error_t jerr;
    json_t *list = json_loads(json, 0, &jerr);
    if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > 4096) {
        json_decref(list);
        return e2g_fail(err, "metadata concepts must be a non-empty JSON list of names");
    }
    int n = (int)json_array_size(list);
    m->concept_names = e2g_xcalloc(n, sizeof(char *));
    m->cfg.n_concepts = n;
    for (int i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(list, i));
        if (!s || !*s) {
            json_decref(list);
            return e2g_fail(err, "metadata concepts[%d] is not a non-empty string", i);
        }
        m->concept_names[i] = strdup(s);
    }
    json_decref(list);
    return 0;
}

int e2g_model_load(e2g_model **out, const char *path, char *err) {
    e2g_st_file *f = NULL;
    e2g_model *m = NULL;
    if (e2g_st_open(&f, path, err)) return -1;
    m = e2g_xcalloc(1, sizeof *m);
    const char *format = e2g_st_meta(f, "format");
    if (!format || strcmp(format, "e2gan-base") != 0) {
        e2g_fail(err, "%s is not an e2gan base model (metadata format is %s%s%s)", path,
                 format ? "\"" : "", format ? format : "missing", format ? "\"" : "");
        goto fail;
    }
    const char *concepts = e2g_st_meta(f, "concepts");
    if (!concepts) {
        e2g_fail(err, "metadata concepts is missing");
        goto fail;
    }
    if (meta_int(f, "ngf", 1, 512, &m->cfg.ngf, err) ||
        meta_int(f, "ctx_tokens", 1, 256, &m->cfg.ctx_tokens, err) ||
        meta_flag(f, "unet_skips", 1, &m->cfg.unet_skips, err) ||
        meta_flag(f, "residual_out", 1, &m->cfg.residual_out, err) ||
        meta_flag(f, "norm_ends", 0, &m->cfg.norm_ends, err) || meta_flag(f, "film", 0, &m->cfg.film, err) ||
        meta_flag(f, "skip_gate", 0, &m->cfg.skip_gate, err) || parse_concepts(m, concepts, err))
        goto fail;
    m->memory = e2g_xmalloc(e2g_gen_param_count(&m->cfg) * sizeof(float));
    e2g_gen_bind(&m->cfg, &m->params, m->memory);
    e2g_tensor_entry t[E2G_GEN_MAX_TENSORS];
    int n = e2g_gen_tensors(&m->cfg, &m->params, t);
    if (read_table(f, "", t, n, err) || load_disc(m, f, err)) goto fail;
    e2g_tensor_entry dt[E2G_DISC_MAX_TENSORS];
    int dn = m->ndf ? e2g_disc_tensors(m->ndf, &m->disc, dt) : 0;
    if (check_no_extra(f, t, n, dt, dn, err)) goto fail;
    e2g_st_sha256(f, m->sha256);
    e2g_st_close(f);
    *out = m;
    return 0;
fail:
    e2g_st_close(f);
    e2g_model_free(m);
    return -1;
}

e2g_model *e2g_model_new(const e2g_gen_config *cfg, const char *const *concept_names, int ndf,
                         unsigned long long seed) {
    e2g_model *m = e2g_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->concept_names = e2g_xcalloc(cfg->n_concepts, sizeof(char *));
    for (int i = 0; i < cfg->n_concepts; i++) m->concept_names[i] = strdup(concept_names[i]);
    m->memory = e2g_xmalloc(e2g_gen_param_count(cfg) * sizeof(float));
    e2g_gen_bind(cfg, &m->params, m->memory);
    e2g_gen_init(cfg, &m->params, seed);
    if (ndf > 0) {
        m->ndf = ndf;
        m->disc_memory = e2g_xmalloc(e2g_disc_param_count(ndf) * sizeof(float));
        e2g_disc_bind(ndf, &m->disc, m->disc_memory);
        e2g_disc_init(ndf, &m->disc, seed ^ 0xD15Cull);
    }
    return m;
}

static int add_table(e2g_st_writer *w, const char *prefix, const e2g_tensor_entry *t, int n,
                     char *err) {
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%.8s%.48s", prefix, t[i].name);
        if (e2g_st_writer_add(w, name, E2G_DTYPE_F32, t[i].ndim, t[i].shape, *t[i].slot, err))
            return -1;
    }
    return 0;
}

int e2g_model_save(e2g_model *m, const char *path, const char *const *extra_meta, char *err) {
    e2g_st_writer *w = e2g_st_writer_new();
    e2g_tensor_entry t[E2G_GEN_MAX_TENSORS];
    int n = e2g_gen_tensors(&m->cfg, &m->params, t), rc = -1;
    if (add_table(w, "", t, n, err)) goto out;
    if (m->ndf) {
        e2g_tensor_entry dt[E2G_DISC_MAX_TENSORS];
        int dn = e2g_disc_tensors(m->ndf, &m->disc, dt);
        if (add_table(w, DISC_PREFIX, dt, dn, err)) goto out;
    }
    json_t *names = json_array();
    for (int i = 0; i < m->cfg.n_concepts; i++) json_array_append_new(names, json_string(m->concept_names[i]));
    char *names_json = json_dumps(names, JSON_COMPACT);
    json_decref(names);
    char ngf[16], ctx[16];
    snprintf(ngf, sizeof ngf, "%d", m->cfg.ngf);
    snprintf(ctx, sizeof ctx, "%d", m->cfg.ctx_tokens);
    const char *meta[] = {"format", "e2gan-base", "ngf", ngf, "ctx_tokens", ctx, "concepts",
                          names_json, "unet_skips", m->cfg.unet_skips ? "true" : "false",
                          "residual_out", m->cfg.residual_out ? "true" : "false", "norm_ends",
                          m->cfg.norm_ends ? "true" : "false"};
    int bad = 0;
    for (size_t i = 0; i < sizeof meta / sizeof *meta && !bad; i += 2)
        bad = e2g_st_writer_meta(w, meta[i], meta[i + 1], err);
    if (!bad && m->cfg.film) bad = e2g_st_writer_meta(w, "film", "true", err); /* absent: false */
    if (!bad && m->cfg.skip_gate) bad = e2g_st_writer_meta(w, "skip_gate", "true", err);
    free(names_json);
    for (int i = 0; !bad && extra_meta && extra_meta[i]; i += 2)
        bad = e2g_st_writer_meta(w, extra_meta[i], extra_meta[i + 1], err);
    if (bad) goto out;
    rc = e2g_st_writer_save(w, path, err);
out:
    e2g_st_writer_free(w);
    return rc;
}

int e2g_model_concept(const e2g_model *m, const char *name) {
    for (int i = 0; i < m->cfg.n_concepts; i++)
        if (strcmp(m->concept_names[i], name) == 0) return i;
    return -1;
}

void e2g_model_add_conditioning(e2g_model *m, int film, int skip_gate) {
    e2g_gen_config cfg = m->cfg;
    cfg.film |= film, cfg.skip_gate |= skip_gate;
    if (cfg.film == m->cfg.film && cfg.skip_gate == m->cfg.skip_gate) return;
    e2g_gen_params params;
    float *memory = e2g_xcalloc(e2g_gen_param_count(&cfg), sizeof(float)); /* new tensors start at 0 */
    e2g_gen_bind(&cfg, &params, memory);
    e2g_tensor_entry old[E2G_GEN_MAX_TENSORS], now[E2G_GEN_MAX_TENSORS];
    int n_old = e2g_gen_tensors(&m->cfg, &m->params, old), n_now = e2g_gen_tensors(&cfg, &params, now);
    for (int i = 0; i < n_now; i++)
        for (int j = 0; j < n_old; j++)
            if (strcmp(now[i].name, old[j].name) == 0)
                memcpy(*now[i].slot, *old[j].slot, now[i].numel * sizeof(float));
    free(m->memory);
    m->memory = memory, m->params = params, m->cfg = cfg;
}

const float *e2g_model_context(const e2g_model *m, int concept) {
    return m->params.concepts + (size_t)concept * m->cfg.ctx_tokens * e2g_gen_c4(&m->cfg);
}

int e2g_model_add_concept(e2g_model *m, const char *name) {
    int k = e2g_model_concept(m, name);
    if (k >= 0) return k;
    size_t ctx = (size_t)m->cfg.ctx_tokens * e2g_gen_c4(&m->cfg);
    e2g_gen_config cfg = m->cfg;
    cfg.n_concepts++;
    /* `concepts` is the last tensor of the table: growing the block keeps
     * every other tensor where it was */
    m->memory = realloc(m->memory, e2g_gen_param_count(&cfg) * sizeof(float));
    E2G_ASSERT(m->memory != NULL);
    m->cfg = cfg;
    e2g_gen_bind(&m->cfg, &m->params, m->memory);
    float *row = m->params.concepts + (size_t)(cfg.n_concepts - 1) * ctx;
    memset(row, 0, ctx * sizeof(float));
    for (int c = 0; c < cfg.n_concepts - 1; c++)
        for (size_t i = 0; i < ctx; i++) row[i] += m->params.concepts[(size_t)c * ctx + i] / (cfg.n_concepts - 1);
    m->concept_names = realloc(m->concept_names, cfg.n_concepts * sizeof(char *));
    m->concept_names[cfg.n_concepts - 1] = strdup(name);
    return cfg.n_concepts - 1;
}
