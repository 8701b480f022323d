/* model_io.h — a loaded base model: the generator's configuration, concept
 * names and weights, optionally its discriminator (tensors `disc.*`), and
 * the SHA-256 of the file adapters are bound to (docs/architecture.md §4).  It
 * holds no backend state: an e2g_runtime (infer.h) binds it to a device. */
#ifndef E2G_MODEL_IO_H
#define E2G_MODEL_IO_H

#include "model.h"

typedef struct {
    e2g_gen_config cfg;
    char **concept_names; /* cfg.n_concepts, in `concepts` row order */
    e2g_gen_params params;
    float *memory;
    int ndf; /* 0 when the file has no discriminator */
    e2g_disc_params disc;
    float *disc_memory;
    char sha256[65];
} e2g_model;

/* Loads and validates a base file; *out is freed with e2g_model_free. */
int e2g_model_load(e2g_model **out, const char *path, char *err);
/* A freshly initialised model (ndf 0: no discriminator). */
e2g_model *e2g_model_new(const e2g_gen_config *cfg, const char *const *concept_names, int ndf,
                         unsigned long long seed);
/* Writes the model atomically; extra_meta is a NULL-terminated list of
 * key, value pairs added to the metadata (may be NULL). */
int e2g_model_save(e2g_model *m, const char *path, const char *const *extra_meta, char *err);
void e2g_model_free(e2g_model *m);

/* Index of a base concept by name, or -1. */
int e2g_model_concept(const e2g_model *m, const char *name);
/* Adds a concept whose embedding starts at the mean of the others (full
 * fine-tuning of a base on a new concept); returns its index, or the
 * existing one's. */
int e2g_model_add_concept(e2g_model *m, const char *name);
/* Gives a model the FiLM tensors (film) and the skip gates (skip_gate) it
 * lacks, zero, so it computes what it computed before and can learn them
 * (e2gan train --init OLD --film --skip-gate); no-op when it has them. */
void e2g_model_add_conditioning(e2g_model *m, int film, int skip_gate);
/* The (T, C4) embedding of base concept i. */
const float *e2g_model_context(const e2g_model *m, int concept);

#endif
