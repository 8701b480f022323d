/* registry.c — the server's concepts: base concepts plus an adapter
 * directory, with an LRU adapter cache bounded in bytes (see registry.h).
 *
 * Each loaded adapter is a `shared` object counted by the cache (one
 * reference while cached) and by every request that pinned it; it is freed
 * when the count drops to zero, so evicting, replacing or deleting an
 * adapter never pulls it from under a running batch.
 *
 * Each entry remembers the identity of the file it was loaded from (device,
 * inode, size, mtime): an atomic replacement (rename) or a rewrite gives a
 * new identity, so the watcher thread (inotify) and re-scans reload exactly
 * the files that changed, whoever changed them. */
#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "safetensors.h"

#define MAX_NAME 64
#define SUFFIX ".safetensors"
#define PATH_LEN (PATH_MAX + MAX_NAME + 64)

/* Which file an adapter came from: a replaced or rewritten file differs. */
typedef struct {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_id;

typedef struct shared {
    e2g_adapter *adapter;
    int refs;
    struct shared *next; /* every live one, for release by pointer */
} shared;

typedef struct entry {
    char name[MAX_NAME + 1];
    shared *current; /* NULL when not in memory */
    size_t bytes;    /* memory when loaded */
    file_id file;    /* the file the entry describes */
    unsigned long last_used;
    json_t *info; /* ranks, training summary */
    struct entry *next;
} entry;

/* A name whose upload e2g_registry_put is writing: the watcher and
 * re-scans leave it alone, and the upload syncs it when written. */
typedef struct pending {
    char name[MAX_NAME + 1];
    int count;
    struct pending *next;
} pending;

/* A file that failed validation, remembered so that re-scans neither
 * re-read nor re-report it until it changes. */
typedef struct rejected {
    char name[MAX_NAME + 1];
    file_id file;
    struct rejected *next;
} rejected;

struct e2g_registry {
    const e2g_model *base;
    char dir[PATH_MAX];
    size_t cache_limit, cached_bytes;
    pthread_mutex_t mu;
    entry *entries;
    rejected *rejected;
    shared *live;
    struct pending *uploading; /* names with an upload being written */
    unsigned long clock;
    long hits, misses, evictions;
    /* the watcher thread (e2g_registry_watch) */
    int watching, inotify_fd, stop_pipe[2];
    long rescan_ms;
    pthread_t watcher;
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

/* The concept name of an adapter file name ("NAME.safetensors"); 0 for any
 * other file, hidden and temporary ones included. */
static int adapter_name(const char *file, char *name, size_t n) {
    size_t len = strlen(file), ls = strlen(SUFFIX);
    if (len <= ls || strcmp(file + len - ls, SUFFIX) != 0 || len - ls >= n) return 0;
    snprintf(name, n, "%.*s", (int)(len - ls), file);
    return e2g_concept_name_ok(name);
}

static int file_id_of(const char *path, file_id *id) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *id = (file_id){st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    return 0;
}

static int same_file(const file_id *a, const file_id *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static rejected **rejected_link(e2g_registry *r, const char *name) {
    rejected **pp = &r->rejected;
    while (*pp && strcmp((*pp)->name, name) != 0) pp = &(*pp)->next;
    return pp;
}

/* Remembers name's file as rejected, or forgets it (f NULL). */
static void set_rejected(e2g_registry *r, const char *name, const file_id *f) {
    rejected **pp = rejected_link(r, name);
    if (!f) {
        rejected *gone = *pp;
        if (gone) *pp = gone->next, free(gone);
        return;
    }
    if (!*pp) {
        *pp = e2g_xcalloc(1, sizeof **pp);
        snprintf((*pp)->name, sizeof (*pp)->name, "%s", name);
    }
    (*pp)->file = *f;
}

static pending **pending_link(e2g_registry *r, const char *name) {
    pending **pp = &r->uploading;
    while (*pp && strcmp((*pp)->name, name) != 0) pp = &(*pp)->next;
    return pp;
}

/* Counts an upload of name in (+1) or out (-1) (mutex held). */
static void set_uploading(e2g_registry *r, const char *name, int delta) {
    pending **pp = pending_link(r, name);
    if (!*pp) {
        *pp = e2g_xcalloc(1, sizeof **pp);
        snprintf((*pp)->name, sizeof (*pp)->name, "%s", name);
    }
    if (((*pp)->count += delta) == 0) {
        pending *gone = *pp;
        *pp = gone->next;
        free(gone);
    }
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

/* Adds or refreshes an entry from a validated adapter loaded from file f
 * (mutex held); the new adapter becomes the cached one, the old one lives
 * on while a request pins it.  Callers evict() afterwards. */
static void install(e2g_registry *r, const char *name, e2g_adapter *a, const file_id *f) {
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
    e->file = *f;
    set_rejected(r, name, NULL);
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

/* Brings name's entry in line with its file: added, replaced (a new file
 * identity) or removed.  The file is read outside the lock and installed
 * only if it is still the one on disk, so an older version never overwrites
 * a newer one (whose change brings its own event or re-scan). */
static void sync_name(e2g_registry *r, const char *name) {
    char path[PATH_LEN], err[E2G_ERR_LEN];
    path_of(r, name, path, sizeof path);
    file_id before = {0}, after;
    pthread_mutex_lock(&r->mu);
    if (*pending_link(r, name)) { /* the upload syncs it when written */
        pthread_mutex_unlock(&r->mu);
        return;
    }
    entry *e = find(r, name);
    int missing = file_id_of(path, &before) != 0;
    rejected *rej = *rejected_link(r, name);
    int known = !missing && ((e && same_file(&e->file, &before)) || (rej && same_file(&rej->file, &before)));
    if (missing) {
        if (e) remove_entry(r, e);
        set_rejected(r, name, NULL);
    }
    pthread_mutex_unlock(&r->mu);
    if (missing || known) return;

    e2g_adapter *a = NULL;
    if (e2g_model_concept(r->base, name) >= 0) e2g_fail(err, "the base has a concept of that name");
    else a = load_file(r, name, path, err);
    pthread_mutex_lock(&r->mu);
    if (file_id_of(path, &after) == 0 && same_file(&before, &after)) {
        e = find(r, name);
        if (a) {
            install(r, name, a, &after);
            evict(r);
            a = NULL;
        } else {
            fprintf(stderr, "e2gan: skipping adapter %s: %s\n", path, err);
            if (e) remove_entry(r, e);
            set_rejected(r, name, &after);
        }
    }
    pthread_mutex_unlock(&r->mu);
    e2g_adapter_free(a); /* the file changed while it was read */
}

/* Whether a file name is one of an upload's temp files (e2g_write_file_atomic's
 * NAME.safetensors.upload.XXXXXX, and .NAME.validate.XXXXXX that earlier
 * versions wrote). */
static int upload_temp_name(const char *name) {
    return strstr(name, ".upload.") || (name[0] == '.' && strstr(name, ".validate."));
}

/* Syncs every NAME.safetensors of the directory, and removes upload temp
 * files an hour old or more: an upload killed mid-write leaves one (never
 * served), and a younger one may be another replica's upload in progress. */
static void scan(e2g_registry *r) {
    DIR *d = opendir(r->dir);
    if (!d) return;
    struct dirent *de;
    char name[NAME_MAX + 1];
    time_t now = time(NULL);
    while ((de = readdir(d))) {
        if (adapter_name(de->d_name, name, sizeof name)) {
            sync_name(r, name);
        } else if (upload_temp_name(de->d_name)) {
            char path[2 * PATH_LEN];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", r->dir, de->d_name);
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime >= 3600 && unlink(path) == 0)
                fprintf(stderr, "e2gan: removed %s, left by an interrupted upload\n", path);
        }
    }
    closedir(d);
}

int e2g_registry_open(e2g_registry **out, const e2g_model *base, const char *adapter_dir,
                      size_t cache_bytes, char *err) {
    if (mkdir(adapter_dir, 0755) != 0 && errno != EEXIST)
        return e2g_fail(err, "cannot create adapter directory %s: %s", adapter_dir, strerror(errno));
    e2g_registry *r = e2g_xcalloc(1, sizeof *r);
    r->base = base, r->cache_limit = cache_bytes, r->inotify_fd = -1;
    snprintf(r->dir, sizeof r->dir, "%s", adapter_dir);
    pthread_mutex_init(&r->mu, NULL);
    scan(r);
    *out = r;
    return 0;
}

void e2g_registry_close(e2g_registry *r) {
    if (!r) return;
    if (r->watching) {
        if (write(r->stop_pipe[1], "x", 1) != 1) abort(); /* a pipe nobody filled */
        pthread_join(r->watcher, NULL);
        close(r->stop_pipe[0]), close(r->stop_pipe[1]);
        if (r->inotify_fd >= 0) close(r->inotify_fd);
    }
    while (r->entries) remove_entry(r, r->entries);
    while (r->rejected) set_rejected(r, r->rejected->name, NULL);
    while (r->uploading) set_uploading(r, r->uploading->name, -r->uploading->count);
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
    pthread_mutex_unlock(&r->mu);
    scan(r);
}

/* ---- following the directory ----------------------------------------------------- */

static double monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The watcher: syncs the name of every inotify event, re-scans on a queue
 * overflow and every rescan_ms, until a byte arrives on the stop pipe. */
static void *watch_main(void *arg) {
    e2g_registry *r = arg;
    struct pollfd fds[2] = {{.fd = r->stop_pipe[0], .events = POLLIN}, {.fd = r->inotify_fd, .events = POLLIN}};
    nfds_t nfds = r->inotify_fd >= 0 ? 2 : 1;
    _Alignas(struct inotify_event) char buf[4096];
    char name[NAME_MAX + 1];
    double next_rescan = monotonic_ms() + (double)r->rescan_ms;
    for (;;) {
        int timeout = -1;
        if (r->rescan_ms > 0) {
            double left = next_rescan - monotonic_ms();
            timeout = left > 0 ? (int)left + 1 : 0;
        }
        int n = poll(fds, nfds, timeout);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || fds[0].revents) break;
        if (r->rescan_ms > 0 && monotonic_ms() >= next_rescan) {
            e2g_registry_rescan(r);
            next_rescan = monotonic_ms() + (double)r->rescan_ms;
        }
        if (nfds < 2 || !fds[1].revents) continue;
        ssize_t len;
        while ((len = read(r->inotify_fd, buf, sizeof buf)) > 0)
            for (char *p = buf; p < buf + len;) {
                const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
                p += sizeof *ev + ev->len;
                if (ev->mask & IN_Q_OVERFLOW) e2g_registry_rescan(r);
                else if (ev->len && adapter_name(ev->name, name, sizeof name)) sync_name(r, name);
            }
    }
    return NULL;
}

int e2g_registry_watch(e2g_registry *r, int rescan_s, char *err) {
    int rc = 0;
    r->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (r->inotify_fd >= 0 &&
        inotify_add_watch(r->inotify_fd, r->dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR) < 0) {
        int saved = errno;
        close(r->inotify_fd);
        r->inotify_fd = -1;
        errno = saved;
    }
    if (r->inotify_fd < 0) {
        e2g_fail(err, "cannot follow %s with inotify (%s)%s", r->dir, strerror(errno),
                 rescan_s > 0 ? ": re-scanning it periodically only" : "");
        if (rescan_s <= 0) return -1;
        rc = 1;
    }
    r->rescan_ms = rescan_s > 0 ? 1000L * rescan_s : 0;
    if (pipe2(r->stop_pipe, O_CLOEXEC) != 0 || pthread_create(&r->watcher, NULL, watch_main, r) != 0) {
        if (r->inotify_fd >= 0) close(r->inotify_fd);
        r->inotify_fd = -1;
        return e2g_fail(err, "cannot start the adapter directory watcher: %s", strerror(errno));
    }
    r->watching = 1;
    /* files that arrived between the first scan and the watch */
    e2g_registry_rescan(r);
    return rc;
}

/* ---- listing ------------------------------------------------------------------- */

static json_t *describe_entry(const entry *e) {
    json_t *j = json_pack("{s:s,s:s,s:I,s:b}", "name", e->name, "kind", "adapter", "file_bytes",
                          (json_int_t)e->file.size, "cached", e->current != NULL);
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
        file_id f = e->file;
        install(r, e->name, a, &f);
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

int e2g_registry_put(e2g_registry *r, const char *name, const uint8_t *data, size_t n,
                     int *created, char *err) {
    if (!e2g_concept_name_ok(name))
        return e2g_fail(err, "a concept name is 1..64 of A-Z a-z 0-9 . _ - and does not start with '.'"), -1;
    if (e2g_model_concept(r->base, name) >= 0)
        return e2g_fail(err, "'%s' is a concept of the base model", name), -1;
    /* parsed and validated once, from memory, before anything touches the
     * directory; then written once, atomically, and installed as parsed */
    e2g_adapter *a = NULL;
    if (e2g_adapter_load_mem(&a, r->base, data, n, "the upload", err)) return -2;
    free(a->concept);
    a->concept = strdup(name);
    char path[PATH_LEN];
    path_of(r, name, path, sizeof path);
    pthread_mutex_lock(&r->mu);
    set_uploading(r, name, +1);
    pthread_mutex_unlock(&r->mu);
    struct stat st;
    memset(&st, 0, sizeof st);
    int rc = 0;
    if (e2g_write_file_atomic_stat(path, data, n, &st, err))
        rc = errno == ENOSPC || errno == EDQUOT ? -4 : -3;
    file_id written = {st.st_dev, st.st_ino, st.st_size, st.st_mtim}, now;
    pthread_mutex_lock(&r->mu);
    set_uploading(r, name, -1);
    *created = find(r, name) == NULL;
    /* installed only while the file is still this upload's: another
     * replica may have replaced or removed it since (or the write failed),
     * and then the sync below brings in whatever is there now */
    int ours = rc == 0 && file_id_of(path, &now) == 0 && same_file(&written, &now);
    if (ours) {
        install(r, name, a, &written);
        evict(r);
        a = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    e2g_adapter_free(a);
    if (!ours) sync_name(r, name);
    return rc;
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
