/* config.c — the option table and the four ways of setting an option
 * (default, config file, environment, flag).  Defaults are written as text
 * and parsed by the same code as any user value, so a default out of its
 * own bounds is caught by the tests rather than served. */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "precision.h"

typedef enum { OPT_STRING, OPT_INT, OPT_SIZE, OPT_ENUM } opt_type;

enum { OPT_REQUIRED = 1, OPT_SECRET = 2 };

typedef struct {
    const char *name; /* file key; flag --name with '-', variable E2GAN_NAME */
    opt_type type;
    size_t offset; /* of the char * or long long in e2g_server_config */
    const char *arg; /* the value's name in --help */
    const char *def;
    long long min, max; /* value bounds; for strings, length bounds */
    const char *const *choices; /* OPT_ENUM: NULL-terminated, stored as the index */
    int (*check)(const char *value, char *err, size_t len);
    unsigned flags;
    const char *help;
} option;

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const off_on[] = {"off", "on", NULL};

static int check_listen(const char *value, char *err, size_t len);
static int check_token(const char *value, char *err, size_t len);
static int check_origins(const char *value, char *err, size_t len);
static int check_precision(const char *value, char *err, size_t len);

#define STR(field) OPT_STRING, offsetof(e2g_server_config, field)
#define NUM(kind, field) kind, offsetof(e2g_server_config, field)
#define KIB 1024LL
#define MIB (1024LL * 1024)
#define GIB (1024LL * 1024 * 1024)

static const option options[] = {
    {"model", STR(model), "FILE", "", 1, 4096, NULL, NULL, OPT_REQUIRED,
     "base model weights (safetensors, format e2gan-base)"},
    {"adapters", STR(adapters), "DIR", "adapters", 1, 4096, NULL, NULL, 0,
     "adapter directory: NAME.safetensors files are concepts; created if missing"},
    {"listen", STR(listen), "HOST:PORT", "127.0.0.1:8080", 3, 300, NULL, check_listen, 0,
     "address to serve on; [::1]:8080 for IPv6, port 0 picks a free port"},
    {"static_dir", STR(static_dir), "DIR", "static", 1, 4096, NULL, NULL, 0,
     "folder of the web page, served at /"},
    {"openapi", STR(openapi), "FILE", "openapi.yaml", 1, 4096, NULL, NULL, 0,
     "the API description served at /openapi.yaml"},
    {"admin_token", STR(admin_token), "TOKEN", "", 0, 256, NULL, check_token, OPT_SECRET,
     "Bearer token of the admin routes (16+ characters); empty disables them (403)"},
    {"cors_origins", STR(cors_origins), "LIST", "", 0, 4096, NULL, check_origins, 0,
     "origins allowed by CORS, comma-separated (https://a.example,http://localhost:3000) or *"},
    {"max_body", NUM(OPT_SIZE, max_body), "BYTES", "32M", KIB, GIB, NULL, NULL, 0,
     "largest request body (K, M, G suffixes); larger is 413"},
    {"jobs_dir", STR(jobs_dir), "DIR", "jobs", 1, 4096, NULL, NULL, 0,
     "folder of the fine-tuning jobs (one folder each; kept across restarts)"},
    {"finetune", NUM(OPT_ENUM, finetune), "on|off", "on", 0, 0, off_on, NULL, 0,
     "run fine-tuning jobs here (needs admin_token); off answers 503, for the replicas of a "
     "scale-out whose designated worker runs them"},
    {"trainer", STR(trainer), "FILE", "", 0, 4096, NULL, NULL, 0,
     "the e2gan CLI that runs fine-tuning jobs; empty: e2gan beside e2gan-server"},
    {"max_upload", NUM(OPT_SIZE, max_upload), "BYTES", "512M", KIB, 16 * GIB, NULL, NULL, 0,
     "largest fine-tuning upload (POST /v1/finetunes); larger is 413"},
    {"finetune_threads", NUM(OPT_INT, finetune_threads), "N", "1", 1, 1024, NULL, NULL, 0,
     "threads of a fine-tuning job (a child process, apart from serving)"},
    {"finetune_nice", NUM(OPT_INT, finetune_nice), "N", "19", 0, 19, NULL, NULL, 0,
     "nice value of a fine-tuning job; 19 (the default) also makes it SCHED_IDLE: it gets the CPU only when edits leave it idle"},
    {"finetune_attempts", NUM(OPT_INT, finetune_attempts), "N", "3", 1, 100, NULL, NULL, 0,
     "starts of a job interrupted by restarts before it is marked failed"},
    {"max_pixels", NUM(OPT_INT, max_pixels), "N", "4194304", 64, 1LL << 28, NULL, NULL, 0,
     "largest input image in pixels (width x height); larger is 413 before decoding"},
    {"max_batch", NUM(OPT_INT, max_batch), "N", "8", 1, 64, NULL, NULL, 0,
     "images per engine call"},
    {"batch_delay_us", NUM(OPT_INT, batch_delay_us), "US", "2000", 0, 1000000, NULL, NULL, 0,
     "longest wait for a batch to fill, microseconds"},
    {"queue_capacity", NUM(OPT_INT, queue_capacity), "N", "64", 1, 4096, NULL, NULL, 0,
     "edits waiting for the engine; more is 503 with Retry-After"},
    {"request_timeout_ms", NUM(OPT_INT, request_timeout_ms), "MS", "30000", 100, 600000, NULL,
     NULL, 0, "an edit's longest time in the queue and the engine; later is 503"},
    {"retry_after_s", NUM(OPT_INT, retry_after_s), "S", "1", 1, 3600, NULL, NULL, 0,
     "Retry-After of 503 answers, seconds"},
    {"adapter_rescan_s", NUM(OPT_INT, adapter_rescan_s), "S", "0", 0, 3600, NULL, NULL, 0,
     "also re-scan the adapter directory every S seconds (0: never); changes are followed at "
     "once through inotify, which misses other hosts' changes on network file systems (NFS)"},
    {"adapter_cache", NUM(OPT_SIZE, adapter_cache), "BYTES", "256M", MIB, 64 * GIB, NULL, NULL,
     0, "memory for loaded adapters (LRU)"},
    {"threads", NUM(OPT_INT, threads), "N", "0", 0, 1024, NULL, NULL, 0,
     "engine threads; 0 uses every core"},
    {"precision", STR(precision), "auto|fp32|bf16", "auto", 4, 4, NULL, check_precision, 0,
     "the CPU engine's compute precision: bf16 convolutions with fp32 accumulation; auto picks "
     "bf16 where the CPU multiplies it natively (AVX512_BF16, AMX), else fp32"},
    {"max_connections", NUM(OPT_INT, max_connections), "N", "256", 1, 10000, NULL, NULL, 0,
     "open connections (one thread each)"},
    {"connection_timeout_s", NUM(OPT_INT, connection_timeout_s), "S", "30", 1, 3600, NULL,
     NULL, 0, "an idle connection is closed after this many seconds"},
    {"drain_timeout_s", NUM(OPT_INT, drain_timeout_s), "S", "60", 0, 3600, NULL, NULL, 0,
     "on SIGINT/SIGTERM, longest wait for requests in progress before closing connections"},
    {"jpeg_quality", NUM(OPT_INT, jpeg_quality), "Q", "90", 1, 100, NULL, NULL, 0,
     "JPEG and WebP quality when a request gives none"},
    {"log_level", NUM(OPT_ENUM, log_level), "LEVEL", "info", 0, 0, log_levels, NULL, 0,
     "least severe level logged: debug, info, warn, error"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static int failf(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char *err, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && len) vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return -1;
}

int e2g_config_split_listen(const char *listen, char *host, size_t host_len, int *port) {
    const char *host_start = listen, *host_end, *p;
    if (listen[0] == '[') {
        host_start = listen + 1;
        host_end = strchr(host_start, ']');
        if (!host_end || host_end[1] != ':') return -1;
        p = host_end + 2;
    } else {
        host_end = strchr(listen, ':');
        if (!host_end || strchr(host_end + 1, ':')) return -1;
        p = host_end + 1;
    }
    size_t hl = (size_t)(host_end - host_start);
    if (hl == 0 || hl >= host_len) return -1;
    memcpy(host, host_start, hl);
    host[hl] = '\0';
    if (!*p || strlen(p) > 5) return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    long v = strtol(p, NULL, 10);
    if (v > 65535) return -1;
    *port = (int)v;
    return 0;
}

static int check_listen(const char *value, char *err, size_t len) {
    char host[256];
    int port;
    if (e2g_config_split_listen(value, host, sizeof host, &port) != 0)
        return failf(err, len, "'%s' is not HOST:PORT (port 0..65535, [v6 address]:PORT)", value);
    return 0;
}

/* RFC 6750 b64token: [A-Za-z0-9-._~+/]+ followed by '=' padding. */
static int check_token(const char *value, char *err, size_t len) {
    size_t n = strlen(value);
    if (n == 0) return 0;
    if (n < 16) return failf(err, len, "a token needs at least 16 characters, this has %zu", n);
    size_t i = 0;
    while (i < n && (isalnum((unsigned char)value[i]) || strchr("-._~+/", value[i]))) i++;
    if (i == 0) return failf(err, len, "a token must start with a letter, digit or -._~+/");
    while (i < n && value[i] == '=') i++;
    if (i != n) return failf(err, len, "a token may only hold A-Z a-z 0-9 -._~+/ and '=' padding");
    return 0;
}

static int check_precision(const char *value, char *err, size_t len) {
    e2g_precision p;
    if (e2g_precision_parse(value, &p)) return failf(err, len, "'%s' is not auto, fp32 or bf16", value);
    return 0;
}

/* One origin: http:// or https://, a host of [A-Za-z0-9.-] (or [v6]), an
 * optional :port, nothing after. */
static int origin_ok(const char *s, size_t n) {
    size_t skip;
    if (n > 8 && strncmp(s, "https://", 8) == 0) skip = 8;
    else if (n > 7 && strncmp(s, "http://", 7) == 0) skip = 7;
    else return 0;
    size_t i = skip;
    if (s[i] == '[') {
        while (i < n && s[i] != ']') {
            if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '[' && s[i] != '.') return 0;
            i++;
        }
        if (i == n) return 0;
        i++;
    } else {
        size_t start = i;
        while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '-')) i++;
        if (i == start) return 0;
    }
    if (i < n && s[i] == ':') {
        size_t start = ++i;
        while (i < n && isdigit((unsigned char)s[i])) i++;
        if (i == start || i - start > 5) return 0;
    }
    return i == n;
}

static int check_origins(const char *value, char *err, size_t len) {
    if (value[0] == '\0' || strcmp(value, "*") == 0) return 0;
    const char *p = value;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && *p == ' ') p++, n--;
        while (n && p[n - 1] == ' ') n--;
        if (!origin_ok(p, n))
            return failf(err, len, "'%.*s' is not an origin like https://host[:port] (or use * alone)",
                         (int)n, p);
        if (!end) return 0;
        p = end + 1;
    }
}

/* Names compare with '-' and '_' alike and case-sensitively otherwise. */
static const option *find_option(const char *name, size_t n) {
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const char *o = options[i].name;
        size_t k = 0;
        while (k < n && o[k] && (o[k] == name[k] || (o[k] == '_' && name[k] == '-'))) k++;
        if (k == n && o[k] == '\0') return &options[i];
    }
    return NULL;
}

static const option *find_env(const char *var, size_t n) {
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const char *o = options[i].name;
        size_t k = 0;
        while (k < n && o[k] && toupper((unsigned char)o[k]) == var[k]) k++;
        if (k == n && o[k] == '\0') return &options[i];
    }
    return NULL;
}

static int parse_int(const char *s, long long *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* Digits with an optional binary suffix K, M, G (KiB, MiB, GiB; "KB" and
 * "k" are the same). */
static int parse_size(const char *s, long long *out) {
    if (!isdigit((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno) return -1;
    long long mult = 1;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mult = KIB; break;
        case 'M': mult = MIB; break;
        case 'G': mult = GIB; break;
        default: return -1;
        }
        end++;
        if (*end == 'i') end++;
        if (*end == 'B' || *end == 'b') end++;
        if (*end) return -1;
    }
    if (v > LLONG_MAX / mult) return -1;
    *out = v * mult;
    return 0;
}

static void format_size(char *buf, size_t n, long long v) {
    if (v && v % GIB == 0) snprintf(buf, n, "%lldG", v / GIB);
    else if (v && v % MIB == 0) snprintf(buf, n, "%lldM", v / MIB);
    else if (v && v % KIB == 0) snprintf(buf, n, "%lldK", v / KIB);
    else snprintf(buf, n, "%lld", v);
}

static int set_option(e2g_server_config *cfg, const option *o, const char *value, char *err,
                      size_t len) {
    char *base = (char *)cfg + o->offset;
    if (o->type == OPT_STRING) {
        size_t n = strlen(value);
        if ((long long)n < o->min || (long long)n > o->max) {
            if (n == 0) return failf(err, len, "must not be empty");
            return failf(err, len, "%zu characters, allowed %lld..%lld", n, o->min, o->max);
        }
        for (const char *p = value; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return failf(err, len, "control characters are not allowed");
        if (o->check) {
            if (o->check(value, err, len) != 0) return -1;
        }
        char *copy = strdup(value);
        if (!copy) return failf(err, len, "out of memory");
        char **field = (char **)(void *)base;
        free(*field);
        *field = copy;
        return 0;
    }
    long long v = 0;
    if (o->type == OPT_ENUM) {
        long long i = 0;
        while (o->choices[i] && strcmp(o->choices[i], value) != 0) i++;
        if (!o->choices[i]) {
            char list[200] = "";
            for (int k = 0; o->choices[k]; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "",
                         o->choices[k]);
            return failf(err, len, "'%s' is not one of %s", value, list);
        }
        v = i;
    } else {
        int bad = o->type == OPT_SIZE ? parse_size(value, &v) : parse_int(value, &v);
        if (bad)
            return failf(err, len, "'%s' is not %s", value,
                         o->type == OPT_SIZE ? "a size (digits with an optional K, M or G)"
                                             : "an integer");
        if (v < o->min || v > o->max) {
            char lo[32], hi[32];
            if (o->type == OPT_SIZE) {
                format_size(lo, sizeof lo, o->min);
                format_size(hi, sizeof hi, o->max);
            } else {
                snprintf(lo, sizeof lo, "%lld", o->min);
                snprintf(hi, sizeof hi, "%lld", o->max);
            }
            return failf(err, len, "%s is outside %s..%s", value, lo, hi);
        }
    }
    *(long long *)(void *)base = v;
    return 0;
}

int e2g_config_set(e2g_server_config *cfg, const char *name, const char *value, char *err,
                   size_t len) {
    const option *o = find_option(name, strlen(name));
    if (!o) return failf(err, len, "unknown option '%s'", name);
    char why[300];
    if (set_option(cfg, o, value, why, sizeof why) != 0) return failf(err, len, "%s: %s", o->name, why);
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

/* key = value lines; '#' starts a comment line; a value may be wrapped in
 * double quotes to keep surrounding spaces.  A key given twice is an
 * error (one of them would be silently ignored). */
static int load_file(e2g_server_config *cfg, const char *path, char *err, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) return failf(err, len, "config file %s: %s", path, strerror(errno));
    unsigned char seen[N_OPTIONS] = {0};
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = failf(err, len, "%s:%d: expected 'key = value'", path, lineno);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        size_t vn = strlen(value);
        if (vn && value[0] == '"') {
            if (vn < 2 || value[vn - 1] != '"') {
                rc = failf(err, len, "%s:%d: unterminated quoted value", path, lineno);
                break;
            }
            value[vn - 1] = '\0';
            value++;
        }
        const option *o = find_option(key, strlen(key));
        if (!o) {
            rc = failf(err, len, "%s:%d: unknown key '%s'", path, lineno, key);
            break;
        }
        if (seen[o - options]++) {
            rc = failf(err, len, "%s:%d: '%s' is set twice", path, lineno, o->name);
            break;
        }
        char why[300];
        if (set_option(cfg, o, value, why, sizeof why) != 0) {
            rc = failf(err, len, "%s:%d: %s: %s", path, lineno, o->name, why);
            break;
        }
    }
    if (rc == 0 && ferror(f)) rc = failf(err, len, "config file %s: read error", path);
    free(line);
    fclose(f);
    return rc;
}

typedef struct {
    const option *opt;
    const char *value;
    const char *flag; /* as written, for messages */
} flag_value;

int e2g_config_load(e2g_server_config *cfg, int argc, char **argv, char **envp, char *err,
                    size_t len) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char why[300];
        if (set_option(cfg, &options[i], options[i].def, why, sizeof why) != 0 &&
            !(options[i].flags & OPT_REQUIRED))
            return failf(err, len, "default of %s: %s", options[i].name, why);
    }

    /* --help wins over anything else on the line; the other flags are read
     * first to find --config and applied last so that they win. */
    flag_value *flags = calloc((size_t)(argc > 0 ? argc : 1), sizeof *flags);
    if (!flags) return failf(err, len, "out of memory");
    int n_flags = 0, action = E2G_CONFIG_RUN, rc = -1;
    const char *config_path = NULL;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            rc = E2G_CONFIG_HELP;
            goto done;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--check-config") == 0) {
            action = E2G_CONFIG_CHECK;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            failf(err, len, "unexpected argument '%s' (options are --name VALUE)", a);
            goto done;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            failf(err, len, "flag %s needs a value", a);
            goto done;
        }
        if (name_len == 6 && strncmp(name, "config", 6) == 0) {
            config_path = value;
            continue;
        }
        const option *o = find_option(name, name_len);
        if (!o) {
            failf(err, len, "unknown flag --%.*s (see --help)", (int)name_len, name);
            goto done;
        }
        flags[n_flags++] = (flag_value){o, value, a};
    }

    if (!config_path && envp)
        for (char **e = envp; *e; e++)
            if (strncmp(*e, "E2GAN_CONFIG=", 13) == 0) config_path = *e + 13;
    if (config_path && load_file(cfg, config_path, err, len) != 0) goto done;

    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, "E2GAN_", 6) != 0) continue;
        const char *var = *e + 6, *eq = strchr(var, '=');
        if (!eq || (eq - var == 6 && strncmp(var, "CONFIG", 6) == 0)) continue;
        const option *o = find_env(var, (size_t)(eq - var));
        if (!o) {
            E2G_LOG(E2G_LOG_WARN, "ignoring unknown variable E2GAN_%.*s", (int)(eq - var), var);
            continue;
        }
        char why[300];
        if (set_option(cfg, o, eq + 1, why, sizeof why) != 0) {
            failf(err, len, "E2GAN_%.*s: %s", (int)(eq - var), var, why);
            goto done;
        }
    }

    for (int i = 0; i < n_flags; i++) {
        char why[300];
        if (set_option(cfg, flags[i].opt, flags[i].value, why, sizeof why) != 0) {
            failf(err, len, "%s: %s", flags[i].flag, why);
            goto done;
        }
    }

    for (size_t i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        const char *s = o->type == OPT_STRING ? *(char **)(void *)((char *)cfg + o->offset) : "";
        if ((o->flags & OPT_REQUIRED) && (!s || !*s)) {
            char upper[64];
            size_t k = 0;
            for (; o->name[k] && k + 1 < sizeof upper; k++) upper[k] = (char)toupper((unsigned char)o->name[k]);
            upper[k] = '\0';
            failf(err, len, "%s is required: --%s, E2GAN_%s or '%s =' in the config file", o->name,
                  o->name, upper, o->name);
            goto done;
        }
    }
    rc = action;
done:
    free(flags);
    return rc;
}

void e2g_config_free(e2g_server_config *cfg) {
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].type == OPT_STRING) {
            char **field = (char **)(void *)((char *)cfg + options[i].offset);
            free(*field);
            *field = NULL;
        }
}

static void flag_name(char *buf, size_t n, const char *name) {
    size_t k = 0;
    for (; name[k] && k + 1 < n; k++) buf[k] = name[k] == '_' ? '-' : name[k];
    buf[k] = '\0';
}

void e2g_config_help(FILE *f, const char *prog) {
    fprintf(f,
            "usage: %s --model FILE [--adapters DIR] [--listen HOST:PORT] [options]\n"
            "\n"
            "Serves image edits over HTTP (API: openapi.yaml). Every option is also an\n"
            "environment variable and a config-file key (key = value lines, # comments);\n"
            "a flag beats the environment, which beats the file, which beats the default.\n"
            "\n"
            "  --config FILE  E2GAN_CONFIG\n"
            "      read settings from FILE\n"
            "  --check-config\n"
            "      print the effective settings and exit\n"
            "  --help\n"
            "      this text\n",
            prog);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        char flag[64], upper[64], range[96] = "";
        flag_name(flag, sizeof flag, o->name);
        size_t k = 0;
        for (; o->name[k] && k + 1 < sizeof upper; k++) upper[k] = (char)toupper((unsigned char)o->name[k]);
        upper[k] = '\0';
        if (o->type == OPT_INT) {
            snprintf(range, sizeof range, ", %lld..%lld", o->min, o->max);
        } else if (o->type == OPT_SIZE) {
            char lo[32], hi[32];
            format_size(lo, sizeof lo, o->min);
            format_size(hi, sizeof hi, o->max);
            snprintf(range, sizeof range, ", %s..%s", lo, hi);
        }
        fprintf(f, "  --%s %s  E2GAN_%s  ", flag, o->arg, upper);
        if (o->flags & OPT_REQUIRED) fprintf(f, "(required)");
        else if (o->def[0]) fprintf(f, "default %s%s", o->def, range);
        else fprintf(f, "default empty%s", range);
        fprintf(f, "\n      %s\n", o->help);
    }
}

void e2g_config_print(FILE *f, const e2g_server_config *cfg) {
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        const char *base = (const char *)cfg + o->offset;
        if (o->type == OPT_STRING) {
            const char *s = *(char *const *)(const void *)base;
            if ((o->flags & OPT_SECRET) && s[0])
                fprintf(f, "# %s is set (hidden)\n", o->name);
            else
                fprintf(f, "%s = \"%s\"\n", o->name, s);
        } else {
            long long v = *(const long long *)(const void *)base;
            if (o->type == OPT_ENUM) {
                fprintf(f, "%s = %s\n", o->name, o->choices[v]);
            } else if (o->type == OPT_SIZE) {
                char s[32];
                format_size(s, sizeof s, v);
                fprintf(f, "%s = %s\n", o->name, s);
            } else {
                fprintf(f, "%s = %lld\n", o->name, v);
            }
        }
    }
}
