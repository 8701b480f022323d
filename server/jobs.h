/* jobs.h — fine-tuning jobs of the admin API (POST /v1/finetunes): uploaded
 * pairs and options in, a new concept out.  Jobs run one at a time, each as
 * a child process (`e2gan finetune --events`) at low priority with bounded
 * threads, so a failing or killed job never takes serving down.  Each job
 * lives in its own folder of jobs_dir (job.json written atomically, the
 * pairs, events.jsonl, the trainer's log, checkpoint and report); a job
 * that was queued or running when the server stopped is resumed from its
 * checkpoint at the next start, or marked failed after max_attempts
 * starts.  A finished job's adapter is registered as a concept.
 * Thread-safe. */
#ifndef E2G_JOBS_H
#define E2G_JOBS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

typedef struct e2g_jobs e2g_jobs;

typedef struct {
    const char *dir;     /* jobs_dir, created if missing */
    const char *trainer; /* the e2gan CLI */
    const char *model;   /* the base model the server serves */
    int threads;         /* per job */
    int nice;            /* the job's nice value (0..19) */
    int max_attempts;    /* starts before an interrupted job is failed */
} e2g_jobs_config;

typedef enum { E2G_JOB_QUEUED, E2G_JOB_RUNNING, E2G_JOB_SUCCEEDED, E2G_JOB_FAILED, E2G_JOB_CANCELLED,
               E2G_JOB_STATES } e2g_job_state;
extern const char *const e2g_job_state_names[E2G_JOB_STATES];

/* Loads the jobs of cfg->dir (resuming interrupted ones) and starts the
 * runner.  The registry receives finished adapters. */
int e2g_jobs_open(e2g_jobs **out, const e2g_jobs_config *cfg, e2g_registry *registry, char *err);
/* Stops the runner; a running job's process is ended and the job stays
 * "running" on disk, to be resumed at the next start. */
void e2g_jobs_close(e2g_jobs *j);

/* Options of a job, all with defaults: a JSON object of option → value. */
json_t *e2g_job_options_new(void);
/* Sets option `name` from its text form, checked against its bounds.
 * -1 with a message for an unknown name or a bad value. */
int e2g_job_option_set(json_t *options, const char *name, const char *value, char *err);

typedef struct {
    const char *name; /* STEM.src.EXT or STEM.dst.EXT (png, jpg, jpeg, webp) */
    const uint8_t *data;
    size_t size;
} e2g_job_file;

/* Queues a job that trains concept `name` on the pairs in files.  The
 * files are written to the job's folder and checked (names, partners, at
 * least 2 pairs) before the job exists.  Returns 0 with the job's id in id
 * (E2G_JOB_ID_LEN bytes); -1 bad input, -2 a queued or running job already
 * trains that concept, -3 the files could not be written, -4 because the disk is full (err says
 * why; nothing is left behind either way). */
#define E2G_JOB_ID_LEN 32
int e2g_jobs_submit(e2g_jobs *j, const char *name, json_t *options, const e2g_job_file *files,
                    int n, char *id, char *err);

/* A job's description (new reference), or NULL when unknown. */
json_t *e2g_jobs_get(e2g_jobs *j, const char *id);
/* Every job, newest first (new reference). */
json_t *e2g_jobs_list(e2g_jobs *j);
/* Cancels a queued or running job (1), or removes a finished job and its
 * files (0); -1 when unknown. */
int e2g_jobs_cancel(e2g_jobs *j, const char *id);

/* Waits up to wait_s for events of job id past index `from` and returns
 * them as server-sent-event text (malloc'd; NULL when none arrived), with
 * *next the index after the last one.  *over is set when the job has
 * ended and every event was returned (or the job is gone). */
char *e2g_jobs_events(e2g_jobs *j, const char *id, long from, double wait_s, long *next, int *over);

/* How many jobs are in each state. */
void e2g_jobs_counts(e2g_jobs *j, int counts[E2G_JOB_STATES]);

#endif
