/* config.h — the server's settings.  One declarative table (config.c) names
 * every option with its type, default, bounds and help; the same table
 * drives the command-line flags (--max-batch 8 or --max-batch=8), the
 * environment (E2GAN_MAX_BATCH), the config file (max_batch = 8) and
 * --help.  Precedence, lowest first: default, config file, environment,
 * flag. */
#ifndef E2G_CONFIG_H
#define E2G_CONFIG_H

#include <stdio.h>

#include "log.h"

typedef struct {
    char *model;        /* base model weights */
    char *adapters;     /* adapter directory */
    char *listen;       /* HOST:PORT ([::1]:PORT for IPv6) */
    char *static_dir;   /* the web page's folder */
    char *openapi;      /* served at /openapi.yaml */
    char *admin_token;  /* "" = admin routes disabled */
    char *cors_origins; /* comma-separated origins, or "*"; "" = no CORS */
    char *jobs_dir;     /* fine-tuning jobs' folders */
    char *trainer;      /* the e2gan CLI that runs jobs; "" = beside the server */
    char *precision;    /* the CPU's compute precision: auto, fp32 or bf16 */
    long long max_body;           /* bytes */
    long long max_upload;         /* bytes of a fine-tuning upload */
    long long finetune_threads;   /* threads of a job */
    long long finetune_nice;      /* a job's nice value */
    long long finetune_attempts;  /* starts of an interrupted job before it fails */
    long long max_pixels;         /* width × height of an input image */
    long long max_batch;          /* images per engine call */
    long long batch_delay_us;     /* longest wait for a batch to fill */
    long long queue_capacity;     /* queued edits before 503 */
    long long request_timeout_ms; /* an edit's time in the queue and engine */
    long long retry_after_s;      /* Retry-After of 503s */
    long long adapter_cache;      /* bytes of adapters kept in memory */
    long long threads;            /* engine threads, 0 = all cores */
    long long max_connections;
    long long connection_timeout_s; /* idle connection */
    long long drain_timeout_s;      /* graceful shutdown's wait for requests */
    long long jpeg_quality;         /* default JPEG output quality */
    long long log_level;            /* e2g_log_level */
    long long finetune;             /* 1: this server runs fine-tuning jobs */
    long long adapter_rescan_s;     /* periodic re-scan of the adapters, 0 = none */
} e2g_server_config;

typedef enum { E2G_CONFIG_RUN = 0, E2G_CONFIG_HELP = 1, E2G_CONFIG_CHECK = 2 } e2g_config_action;

/* Fills *cfg from the defaults, the config file (--config FILE or
 * E2GAN_CONFIG), envp (a NULL-terminated "NAME=value" list, such as
 * environ; only E2GAN_* entries are read) and argv[1..].  Returns an
 * e2g_config_action (--help asks for HELP, --check-config for CHECK) or -1
 * with a message naming the offending source in err (len bytes).  Unknown
 * E2GAN_* variables are warnings, unknown flags and file keys errors.
 * cfg's strings are owned by it: e2g_config_free releases them, also after
 * a failure. */
int e2g_config_load(e2g_server_config *cfg, int argc, char **argv, char **envp, char *err,
                    size_t len);
void e2g_config_free(e2g_server_config *cfg);

/* Sets one option by its name (file spelling, "max_batch"; '-' and '_' are
 * the same) from text, with the table's parsing and bounds. */
int e2g_config_set(e2g_server_config *cfg, const char *name, const char *value, char *err,
                   size_t len);

/* --help: usage and one entry per option (flag, variable, default, bounds). */
void e2g_config_help(FILE *f, const char *prog);
/* --check-config: the effective settings as a config file (secrets hidden). */
void e2g_config_print(FILE *f, const e2g_server_config *cfg);

/* Splits "host:port" or "[v6]:port" into host (without brackets) and port. */
int e2g_config_split_listen(const char *listen, char *host, size_t host_len, int *port);

#endif
