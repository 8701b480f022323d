/* registry.c — the server's concepts: base concepts plus an adapter
 * directory, with an LRU adapter cache bounded in bytes (see registry.h).
 *
 * Each loaded adapter is a `shared` object counted by the cache (one
 * reference while cached) and by every request that pinned it; it is freed
 * when the count drops to zero, so evicting, replacing or deleting an
 * adapter never pulls it from under a running batch. */
#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "safetensors.h"

#define MAX_NAME 64
#define SUFFIX ".safetensors"
#define PATH_LEN (PATH_MAX + MAX_NAME + 64)

typedef struct shared {
    e2g_adapter *adapter;
    int refs;
    struct shared *next; /* every live one, for release by pointer */
} shared;

typedef struct entry {
    char name[MAX_NAME + 1];
    shared *current; /* NULL when not in memory */
    size_t bytes;    /* memory when loaded */
    size_t file_bytes;
    unsigned long last_used;
    json_t *info; /* ranks, training summary */
    struct entry *next;
} entry;

struct e2g_registry {
    const e2g_model *base;
    char dir[PATH_MAX];
    size_t cache_limit, cached_bytes;
    pthread_mutex_t mu;
    entry *entries;
    shared *live;
    unsigned long clock;
    long hits, misses, evictions;
};

int e2g_concept_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n < 1 || n > MAX_NAME || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void path_of(const e2g_registry *r, const char *name, char *path, size_t n) {
    snprintf(path, n, "%s/%.64s" SUFFIX, r->dir, name);
}

static entry *find(e2g_registry *r, const char *name) {
    for (entry *e = r->entries; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    return NULL;
}

static void unref(e2g_registry *r, shared *s) {
    if (--s->refs > 0) return;
    for (shared **pp = &r->live; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    e2g_adapter_free(s->adapter);
    free(s);
}

/* Drops the cache's reference to an entry's adapter. */
static void uncache(e2g_registry *r, entry *e) {
    if (!e->current) return;
    r->cached_bytes -= e->bytes;
    unref(r, e->current);
    e->current = NULL;
}

/* Evicts least recently used adapters nobody pins until under the limit. */
static void evict(e2g_registry *r) {
    while (r->cached_bytes > r->cache_limit) {
        entry *victim = NULL;
        for (entry *e = r->entries; e; e = e->next)
            if (e->current && e->current->refs == 1 && (!victim || e->last_used < victim->last_used))
                victim = e;
        if (!victim) return; /* everything cached is in use */
        uncache(r, victim);
        r->evictions++;
    }
}

/* Loads and validates an adapter file; names it after its file. */
static e2g_adapter *load_file(e2g_registry *r, const char *name, const char *path, char *err) {
    e2g_adapter *a = NULL;
    if (e2g_adapter_load(&a, r->base, path, err)) return NULL;
    free(a->concept);
    a->concept = strdup(name);
    return a;
}

static json_t *describe_adapter(const e2g_adapter *a) {
    json_t *ranks = json_object();
    for (int l = 0; l < E2G_N_CRUCIAL; l++)
        if (a->lora->rank[l]) json_object_set_new(ranks, e2g_crucial_name(l), json_integer(a->lora->rank[l]));
    return json_pack("{s:o,s:I}", "ranks", ranks, "parameters", (json_int_t)a->lora->numel);
}

/* Adds or refreshes an entry from a validated adapter (mutex held); the
 * new adapter becomes the cached one.  Callers evict() afterwards. */
static void install(e2g_registry *r, const char *name, e2g_adapter *a, size_t file_bytes) {
    entry *e = find(r, name);
    if (!e) {
        e = e2g_xcalloc(1, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", name);
        e->next = r->entries;
        r->entries = e;
    }
    uncache(r, e);
    json_decref(e->info);
    e->info = describe_adapter(a);
    e->file_bytes = file_bytes;
    e->bytes = a->lora->numel * sizeof(float);
    shared *s = e2g_xcalloc(1, sizeof *s);
    s->adapter = a, s->refs = 1, s->next = r->live;
    r->live = s;
    e->current = s;
    e->last_used = ++r->clock;
    r->cached_bytes += e->bytes;
}

static void remove_entry(e2g_registry *r, entry *victim) {
    for (entry **pp = &r->entries; *pp; pp = &(*pp)->next)
        if (*pp == victim) {
            *pp = victim->next;
            break;
        }
    uncache(r, victim);
    json_decref(victim->info);
    free(victim);
}

/* Adds every valid NAME.safetensors not known yet (mutex held). */
static void scan(e2g_registry *r) {
    DIR *d = opendir(r->dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name), ls = strlen(SUFFIX);
        if (n <= ls || strcmp(de->d_name + n - ls, SUFFIX) != 0) continue;
        char name[NAME_MAX + 1], path[PATH_LEN], err[E2G_ERR_LEN];
        snprintf(name, sizeof name, "%.*s", (int)(n - ls), de->d_name);
        if (!e2g_concept_name_ok(name) || find(r, name)) continue;
        if (e2g_model_concept(r->base, name) >= 0) {
            fprintf(stderr, "e2gan: skipping adapter %s: the base has a concept of that name\n", name);
            continue;
        }
        path_of(r, name, path, sizeof path);
        struct stat st;
        e2g_adapter *a = stat(path, &st) == 0 ? load_file(r, name, path, err) : NULL;
        if (!a) {
            fprintf(stderr, "e2gan: skipping adapter %s: %s\n", path, err);
            continue;
        }
        install(r, name, a, (size_t)st.st_size);
        evict(r);
    }
    closedir(d);
}

int e2g_registry_open(e2g_registry **out, const e2g_model *base, const char *adapter_dir,
                      size_t cache_bytes, char *err) {
    if (mkdir(adapter_dir, 0755) != 0 && errno != EEXIST)
        return e2g_fail(err, "cannot create adapter directory %s: %s", adapter_dir, strerror(errno));
    e2g_registry *r = e2g_xcalloc(1, sizeof *r);
    r->base = base, r->cache_limit = cache_bytes;
    snprintf(r->dir, sizeof r->dir, "%s", adapter_dir);
    pthread_mutex_init(&r->mu, NULL);
    scan(r);
    *out = r;
    return 0;
}

void e2g_registry_close(e2g_registry *r) {
    if (!r) return;
    while (r->entries) remove_entry(r, r->entries);
    while (r->live) { /* requests still holding adapters at exit */
        shared *s = r->live;
        r->live = s->next;
        e2g_adapter_free(s->adapter);
        free(s);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void e2g_registry_rescan(e2g_registry *r) {
    pthread_mutex_lock(&r->mu);
    for (entry *e = r->entries, *next; e; e = next) {
        next = e->next;
        char path[PATH_LEN];
        path_of(r, e->name, path, sizeof path);
        if (access(path, F_OK) != 0) remove_entry(r, e);
    }
    scan(r);
    pthread_mutex_unlock(&r->mu);
}

/* ---- listing ------------------------------------------------------------------- */

static json_t *describe_entry(const entry *e) {
    json_t *j = json_pack("{s:s,s:s,s:I,s:b}", "name", e->name, "kind", "adapter", "file_bytes",
                          (json_int_t)e->file_bytes, "cached", e->current != NULL);
    json_object_update(j, e->info);
    return j;
}

json_t *e2g_registry_list(e2g_registry *r) {
    json_t *list = json_array();
    for (int k = 0; k < r->base->cfg.n_concepts; k++)
        json_array_append_new(list, json_pack("{s:s,s:s}", "name", r->base->concept_names[k], "kind", "base"));
    pthread_mutex_lock(&r->mu);
    for (entry *e = r->entries; e; e = e->next) json_array_append_new(list, describe_entry(e));
    pthread_mutex_unlock(&r->mu);
    return list;
}

json_t *e2g_registry_describe(e2g_registry *r, const char *name) {
    if (e2g_model_concept(r->base, name) >= 0) return json_pack("{s:s,s:s}", "name", name, "kind", "base");
    pthread_mutex_lock(&r->mu);
    entry *e = find(r, name);
    json_t *j = e ? describe_entry(e) : NULL;
    pthread_mutex_unlock(&r->mu);
    return j;
}

/* ---- requests ------------------------------------------------------------------- */

/* The adapter of entry e, loaded on a miss; its count is raised for the
 * caller (mutex held).  NULL with err when the file no longer loads. */
static shared *pin(e2g_registry *r, entry *e, char *err) {
    if (e->current) {
        r->hits++;
    } else {
        char path[PATH_LEN];
        path_of(r, e->name, path, sizeof path);
        e2g_adapter *a = load_file(r, e->name, path, err);
        if (!a) return NULL;
        r->misses++;
        install(r, e->name, a, e->file_bytes);
    }
    e->last_used = ++r->clock;
    shared *s = e->current;
    s->refs++;
    evict(r); /* after pinning, so the adapter just loaded stays */
    return s;
}

int e2g_registry_acquire(e2g_registry *r, e2g_request *req, const char *spec, float strength,
                         char *err) {
    memset(req, 0, sizeof *req);
    if (!spec || strlen(spec) > 512) return e2g_fail(err, "concept must be 1..512 bytes"), -1;
    char buf[520];
    snprintf(buf, sizeof buf, "%s", spec);
    e2g_adapter *used[E2G_MAX_TERMS];
    shared *pinned[E2G_MAX_TERMS];
    int n = 0, rc = 0;
    pthread_mutex_lock(&r->mu);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (colon) *colon = '\0';
        if (e2g_model_concept(r->base, tok) >= 0) continue;
        entry *e = find(r, tok);
        if (!e) {
            rc = -2, e2g_fail(err, "unknown concept '%s'", tok);
            break;
        }
        if (n == E2G_MAX_TERMS) {
            rc = -1, e2g_fail(err, "at most %d concepts can be blended", E2G_MAX_TERMS);
            break;
        }
        shared *s = pin(r, e, err);
        if (!s) {
            rc = -3;
            break;
        }
        pinned[n] = s, used[n++] = s->adapter;
    }
    if (rc == 0 && e2g_request_resolve(req, r->base, used, n, spec, strength, err))
        rc = strstr(err, "unknown concept") ? -2 : -1;
    if (rc)
        for (int i = 0; i < n; i++) unref(r, pinned[i]);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void e2g_registry_release(e2g_registry *r, e2g_request *req) {
    pthread_mutex_lock(&r->mu);
    for (int t = 0; t < req->edit.n_terms; t++)
        for (shared *s = r->live; s; s = s->next)
            if (s->adapter->lora == req->edit.terms[t].lora) {
                unref(r, s);
                break;
            }
    pthread_mutex_unlock(&r->mu);
    e2g_request_free(req);
}

/* ---- uploads and deletes ------------------------------------------------------- */

/* Writes data to path through a temp file, fsync and rename, then syncs the
 * directory, so a crash leaves the old file or the new one, never a torn one. */
static int write_atomic(const char *dir, const char *path, const uint8_t *data, size_t n, char *err) {
    char tmp[2 * PATH_LEN];
    if (snprintf(tmp, sizeof tmp, "%s.upload.%d.tmp", path, (int)getpid()) >= (int)sizeof tmp)
        return e2g_fail(err, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return e2g_fail(err, "cannot create %s: %s", tmp, strerror(errno));
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, data + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            e2g_fail(err, "writing %s: %s", tmp, strerror(errno));
            close(fd), unlink(tmp);
            return -1;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        e2g_fail(err, "syncing %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        e2g_fail(err, "renaming %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) fsync(dfd), close(dfd);
    return 0;
}

int e2g_registry_put(e2g_registry *r, const char *name, const uint8_t *data, size_t n,
                     int *created, char *err) {
    if (!e2g_concept_name_ok(name))
        return e2g_fail(err, "a concept name is 1..64 of A-Z a-z 0-9 . _ - and does not start with '.'"), -1;
    if (e2g_model_concept(r->base, name) >= 0)
        return e2g_fail(err, "'%s' is a concept of the base model", name), -1;
    /* validate from memory before anything touches the directory */
    e2g_st_file *f = NULL;
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) return e2g_fail(err, "out of memory for the upload"), -3;
    memcpy(copy, data, n);
    if (e2g_st_parse(&f, copy, n, err)) return -2;
    e2g_st_close(f);
    char path[PATH_LEN];
    path_of(r, name, path, sizeof path);
    char tmp_path[2 * PATH_LEN];
    snprintf(tmp_path, sizeof tmp_path, "%s/.%.64s.validate.%d" SUFFIX, r->dir, name, (int)getpid());
    if (write_atomic(r->dir, tmp_path, data, n, err)) return -3;
    e2g_adapter *a = load_file(r, name, tmp_path, err);
    if (!a) {
        unlink(tmp_path);
        return -2;
    }
    if (rename(tmp_path, path) != 0) {
        e2g_fail(err, "installing %s: %s", path, strerror(errno));
        unlink(tmp_path);
        e2g_adapter_free(a);
        return -3;
    }
    pthread_mutex_lock(&r->mu);
    *created = find(r, name) == NULL;
    install(r, name, a, n);
    evict(r);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int e2g_registry_delete(e2g_registry *r, const char *name, char *err) {
    if (e2g_model_concept(r->base, name) >= 0)
        return e2g_fail(err, "'%s' is a concept of the base model and cannot be deleted", name), -2;
    pthread_mutex_lock(&r->mu);
    entry *e = e2g_concept_name_ok(name) ? find(r, name) : NULL;
    int rc = 0;
    if (!e) {
        rc = -1, e2g_fail(err, "unknown concept '%s'", name);
    } else {
        char path[PATH_LEN];
        path_of(r, name, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT)
            rc = -3, e2g_fail(err, "removing %s: %s", path, strerror(errno));
        else
            remove_entry(r, e);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void e2g_registry_stats_get(e2g_registry *r, e2g_registry_stats *s) {
    pthread_mutex_lock(&r->mu);
    memset(s, 0, sizeof *s);
    s->hits = r->hits, s->misses = r->misses, s->evictions = r->evictions;
    s->cached_bytes = r->cached_bytes, s->cache_limit = r->cache_limit;
    for (entry *e = r->entries; e; e = e->next) s->adapters++, s->cached += e->current != NULL;
    pthread_mutex_unlock(&r->mu);
}
