/* adapter.h — LoRA adapter files (docs/architecture.md §3–§4): validation
 * against a base model, PEFT key names and rank/alpha rules, and turning a
 * concept request ("winter", "a:0.7,b:0.3", with a strength) into the
 * engine's per-sample edit. */
#ifndef E2G_ADAPTER_H
#define E2G_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "model_io.h"

typedef struct {
    char *concept; /* the concept name the adapter provides */
    e2g_lora *lora;
    size_t file_bytes;
} e2g_adapter;

/* Loads an adapter and checks it fits `base`: metadata format e2gan-lora,
 * base_sha256 equal to the base file's, a parseable adapter_config, only
 * known PEFT keys, each lora_A/lora_B pair with the layer's shapes and the
 * rank the config gives it, and the concept embedding (T, C4). */
int e2g_adapter_load(e2g_adapter **out, const e2g_model *base, const char *path, char *err);
/* The same from an adapter file's n bytes in memory (copied; `what` names
 * them in messages, e.g. "the upload").  Both loaders parse and validate
 * the same way, and give the adapter a content identity: lora->id is taken
 * from the SHA-256 of the file's bytes (its first 8 bytes, top bit set, so
 * that it never equals the counter id of an adapter made in memory), so
 * the same bytes loaded twice — a re-scan, a re-upload, another replica —
 * are one adapter to the host and device caches. */
int e2g_adapter_load_mem(e2g_adapter **out, const e2g_model *base, const uint8_t *data, size_t n,
                         const char *what, char *err);
void e2g_adapter_free(e2g_adapter *a);

/* Writes an adapter for `base` (whose sha256 it records): PEFT keys for
 * every layer with a rank, concept.embedding, and an adapter_config whose
 * rank_pattern/alpha_pattern spell out each layer's rank and alpha;
 * extra_meta is a NULL-terminated key, value list (the training report). */
int e2g_adapter_save(const char *path, const e2g_model *base, const e2g_lora *lora,
                     const char *concept, const char *const *extra_meta, char *err);

/* A request resolved against a base and its adapters: the context buffer
 * (T, C4) owned here and the LoRA terms, ready to copy into e2g_edit. */
typedef struct {
    float *context;
    e2g_edit edit;
} e2g_request;

/* Parses spec — a concept name, or up to E2G_MAX_TERMS weighted names
 * "a:0.7,b:0.3" — where each name is a base concept or an adapter's
 * concept; strength (0..2) scales every LoRA delta. */
int e2g_request_resolve(e2g_request *req, const e2g_model *base, e2g_adapter *const *adapters,
                        int n_adapters, const char *spec, float strength, char *err);
void e2g_request_free(e2g_request *req);

#endif
