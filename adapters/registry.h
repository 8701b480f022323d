/* registry.h — the concepts a server offers: the base model's own concepts
 * plus the adapters of an adapter directory.  Adapters are validated against
 * the base when found, loaded into memory on first use and kept in an LRU
 * cache bounded in bytes; a request pins the adapters it uses until it is
 * released, so eviction never frees an adapter a batch is running.
 * Uploads are written atomically (temp file, fsync, rename).  A watcher
 * thread (inotify) follows the directory, so adapters that another process
 * — another replica sharing the directory — adds, replaces or removes are
 * served within moments.  Thread-safe. */
#ifndef E2G_REGISTRY_H
#define E2G_REGISTRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "adapter.h"
#include "model_io.h"

typedef struct e2g_registry e2g_registry;

/* Scans adapter_dir (created if missing) for NAME.safetensors files; a file
 * that fails validation is skipped with a line on stderr, the rest serve. */
int e2g_registry_open(e2g_registry **out, const e2g_model *base, const char *adapter_dir,
                      size_t cache_bytes, char *err);
void e2g_registry_close(e2g_registry *r);

/* A valid concept name: 1..64 of [A-Za-z0-9._-], not starting with '.'. */
int e2g_concept_name_ok(const char *name);

/* Every concept: [{"name", "kind": "base"|"adapter", ...}] (new reference). */
json_t *e2g_registry_list(e2g_registry *r);
/* One concept's description, or NULL when unknown (new reference). */
json_t *e2g_registry_describe(e2g_registry *r, const char *name);

/* Resolves a concept spec (a name or a blend "a:0.7,b:0.3") with a strength
 * into req, pinning (and loading on a cache miss) the adapters it uses.
 * Errors: unknown concept (-2), bad spec or strength (-1), an adapter file
 * that no longer loads (-3). */
int e2g_registry_acquire(e2g_registry *r, e2g_request *req, const char *spec, float strength,
                         char *err);
void e2g_registry_release(e2g_registry *r, e2g_request *req);

/* Adds or replaces adapter `name` from an upload: validated against the
 * base (format, base_sha256, shapes) from memory, then written once,
 * atomically, into the directory and installed as parsed (never re-read).  Errors: bad name (-1), invalid adapter (-2), write failure
 * (-3), a full disk (-4); *created tells whether the name was new.  Nothing
 * of a failed upload is left behind, and the old adapter stays. */
int e2g_registry_put(e2g_registry *r, const char *name, const uint8_t *data, size_t n,
                     int *created, char *err);
/* Removes adapter `name` (file and cache).  -1 unknown name, -2 it is a
 * base concept, -3 the file could not be removed. */
int e2g_registry_delete(e2g_registry *r, const char *name, char *err);
/* Re-scans the directory: adapters added, replaced or removed by another
 * process. */
void e2g_registry_rescan(e2g_registry *r);

/* Starts the watcher thread: every NAME.safetensors renamed into the
 * directory, written and closed there, deleted or renamed away is re-read
 * (added, replaced, removed) at once; hidden and temporary files are
 * ignored.  rescan_s > 0 also re-scans every rescan_s seconds, for file
 * systems whose notifications miss other hosts' changes (NFS).  Returns 0,
 * or 1 with a warning in err when inotify is unavailable and only the
 * periodic re-scans run, or -1 with err when nothing follows the directory
 * (the registry still serves what it found).  e2g_registry_close stops it. */
int e2g_registry_watch(e2g_registry *r, int rescan_s, char *err);

typedef struct {
    long hits, misses, evictions;
    size_t cached_bytes, cache_limit;
    int adapters, cached;
} e2g_registry_stats;
void e2g_registry_stats_get(e2g_registry *r, e2g_registry_stats *s);

#endif
