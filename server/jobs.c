/* jobs.c — fine-tuning jobs (see jobs.h).
 *
 * A job is a folder jobs_dir/ID: job.json (the record: concept, options,
 * state, times, attempts, result or error; replaced atomically on every
 * change of state), pairs/ (the upload), events.jsonl (every progress event,
 * appended), trainer.log (the child's stderr), checkpoint.safetensors,
 * report/ and adapter.safetensors.  A submission is written under a ".new-"
 * name and renamed into place only when complete.  One runner thread takes
 * queued jobs in order and runs each as `e2gan finetune ... --events` in a
 * child process (own process group, nice, OMP_NUM_THREADS bounded, killed
 * with the server by PR_SET_PDEATHSIG), reading its event lines from a
 * pipe. */
#include "jobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "dataset.h"
#include "log.h"

extern char **environ;

const char *const e2g_job_state_names[E2G_JOB_STATES] = {"queued", "running", "succeeded", "failed",
                                                         "cancelled"};

typedef struct job {
    char id[E2G_JOB_ID_LEN];
    json_t *doc;      /* the record, as in job.json */
    json_t *progress; /* the latest progress, rebuilt from the events */
    json_t *events;   /* every event, in order */
    long phase_offset;
    pid_t pid;        /* the trainer while running, else 0 */
    int cancel;
    struct job *next; /* oldest first */
} job;

struct e2g_jobs {
    char *dir, *trainer, *model;
    int threads, nice, max_attempts;
    e2g_registry *registry;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* the runner: a job was queued, or stop */
    pthread_cond_t changed; /* event readers: a job has news */
    job *head;
    int stopping;
    pthread_t runner;
};

/* ---- options ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    char kind; /* 'i' integer, 'r' real, 'b' boolean */
    double min, max, def;
} option_spec;

static const option_spec option_specs[] = {
    {"steps", 'i', 1, 100000, 300},      {"batch", 'i', 1, 64, 8},
    {"lr", 'r', 1e-6, 1, 2e-3},          {"rank_search", 'b', 0, 1, 1},
    {"max_rank", 'i', 1, 64, 8},         {"rank", 'i', 1, 64, 4},
    {"keep_fraction", 'r', 0.01, 1, 0.5}, {"gan_weight", 'r', 0, 1000, 0},
    {"edge_weight", 'r', 0, 1000, 0},    {"dark_weight", 'r', 0, 1000, 0},
    {"crop", 'i', 32, 512, 128},         {"train_crops", 'i', 16, 100000, 1024},
    {"eval_every", 'i', 0, 100000, 100}, {"seed", 'i', 0, 2147483647, 1},
};
#define N_OPTIONS (int)(sizeof option_specs / sizeof option_specs[0])

json_t *e2g_job_options_new(void) {
    json_t *o = json_object();
    for (int i = 0; i < N_OPTIONS; i++) {
        const option_spec *s = &option_specs[i];
        json_object_set_new(o, s->name, s->kind == 'r' ? json_real(s->def)
                                        : s->kind == 'b' ? json_boolean((int)s->def)
                                                         : json_integer((json_int_t)s->def));
    }
    return o;
}

int e2g_job_option_set(json_t *options, const char *name, const char *value, char *err) {
    for (int i = 0; i < N_OPTIONS; i++) {
        const option_spec *s = &option_specs[i];
        if (strcmp(s->name, name) != 0) continue;
        if (s->kind == 'b') {
            int t = !strcmp(value, "true") || !strcmp(value, "1"), f = !strcmp(value, "false") || !strcmp(value, "0");
            if (!t && !f) return e2g_fail(err, "%s must be true or false", name);
            json_object_set_new(options, name, json_boolean(t));
            return 0;
        }
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v) || v < s->min || v > s->max ||
            (s->kind == 'i' && v != floor(v)))
            return e2g_fail(err, "%s must be %s in %g..%g", name, s->kind == 'i' ? "an integer" : "a number",
                            s->min, s->max);
        if (strcmp(name, "crop") == 0 && (long)v % 8)
            return e2g_fail(err, "crop must be a multiple of 8");
        json_object_set_new(options, name, s->kind == 'i' ? json_integer((json_int_t)v) : json_real(v));
        return 0;
    }
    return e2g_fail(err, "unknown option '%s'", name);
}

/* ---- files -------------------------------------------------------------------- */

static void job_path(const e2g_jobs *j, const char *id, const char *name, char *out, size_t len) {
    snprintf(out, len, "%s/%s%s%s", j->dir, id, name[0] ? "/" : "", name);
}

/* Replaces job.json atomically.  Called with the lock held. */
static int save_doc(const e2g_jobs *j, const job *jb, char *err) {
    char path[4096];
    job_path(j, jb->id, "job.json", path, sizeof path);
    char *text = json_dumps(jb->doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    int rc = e2g_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

/* Removes a folder and everything under it (no symlinks are followed). */
static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(sub);
            else unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

static double wall_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- state and events ---------------------------------------------------------- */

static e2g_job_state job_state(const job *jb) {
    const char *s = json_string_value(json_object_get(jb->doc, "state"));
    for (int i = 0; s && i < E2G_JOB_STATES; i++)
        if (strcmp(s, e2g_job_state_names[i]) == 0) return (e2g_job_state)i;
    return E2G_JOB_FAILED;
}

static int job_active(const job *jb) {
    e2g_job_state s = job_state(jb);
    return s == E2G_JOB_QUEUED || s == E2G_JOB_RUNNING;
}

/* Folds one event into the job's progress. */
static void apply_event(job *jb, json_t *ev) {
    const char *kind = json_string_value(json_object_get(ev, "event"));
    json_t *p = jb->progress;
    long total = (long)json_integer_value(json_object_get(json_object_get(jb->doc, "options"), "steps"));
    if (!kind) return;
    if (!strcmp(kind, "phase")) {
        const char *phase = json_string_value(json_object_get(ev, "phase"));
        long steps = (long)json_integer_value(json_object_get(ev, "steps"));
        if (phase && !strcmp(phase, "probe")) jb->phase_offset = 0;
        if (phase && !strcmp(phase, "train")) jb->phase_offset = total - steps;
        json_object_set(p, "phase", json_object_get(ev, "phase"));
    } else if (!strcmp(kind, "step")) {
        long step = jb->phase_offset + (long)json_integer_value(json_object_get(ev, "step"));
        double rate = json_number_value(json_object_get(ev, "steps_per_s"));
        json_object_set_new(p, "step", json_integer(step));
        json_object_set_new(p, "steps", json_integer(total));
        json_object_set_new(p, "fraction", json_real(total ? (double)step / total : 0));
        json_object_set(p, "l1", json_object_get(ev, "l1"));
        json_object_set(p, "steps_per_s", json_object_get(ev, "steps_per_s"));
        json_object_set_new(p, "eta_s", json_real(rate > 0 ? (total - step) / rate : 0));
    } else if (!strcmp(kind, "eval")) {
        json_object_set(p, "psnr", json_object_get(ev, "psnr"));
        json_object_set(p, "ssim", json_object_get(ev, "ssim"));
        json_object_set(p, "identity_psnr", json_object_get(ev, "identity_psnr"));
    }
}

/* Records an event: in memory, in events.jsonl, and wakes the readers.
 * Steals ev.  Called with the lock held. */
static void add_event(e2g_jobs *j, job *jb, json_t *ev) {
    apply_event(jb, ev);
    json_array_append_new(jb->events, ev);
    char path[4096];
    job_path(j, jb->id, "events.jsonl", path, sizeof path);
    FILE *f = fopen(path, "ae");
    if (f) {
        json_dumpf(ev, f, JSON_COMPACT);
        fputc('\n', f);
        if (fclose(f) != 0) E2G_LOG(E2G_LOG_WARN, "job %s: could not append to %s", jb->id, path);
    }
    pthread_cond_broadcast(&j->changed);
}

/* Moves a job to a state (with its time stamp), saves the record and
 * announces it.  Called with the lock held. */
static void set_state(e2g_jobs *j, job *jb, e2g_job_state s, const char *error) {
    json_object_set_new(jb->doc, "state", json_string(e2g_job_state_names[s]));
    if (s == E2G_JOB_RUNNING) json_object_set_new(jb->doc, "started_at", json_real(wall_clock()));
    if (s >= E2G_JOB_SUCCEEDED) json_object_set_new(jb->doc, "finished_at", json_real(wall_clock()));
    json_object_set_new(jb->doc, "error", error ? json_string(error) : json_null());
    char err[E2G_ERR_LEN];
    if (save_doc(j, jb, err)) E2G_LOG(E2G_LOG_ERROR, "job %s: %s", jb->id, err);
    add_event(j, jb, json_pack("{s:s,s:s,s:s?}", "event", "state", "state", e2g_job_state_names[s], "error", error));
    E2G_LOG(s == E2G_JOB_FAILED ? E2G_LOG_WARN : E2G_LOG_INFO, "job %s (%s): %s%s%s", jb->id,
            json_string_value(json_object_get(jb->doc, "concept")), e2g_job_state_names[s],
            error ? ": " : "", error ? error : "");
}

static job *job_new(const char *id, json_t *doc) {
    job *jb = e2g_xcalloc(1, sizeof *jb);
    snprintf(jb->id, sizeof jb->id, "%.*s", E2G_JOB_ID_LEN - 1, id);
    jb->doc = doc;
    jb->progress = json_object();
    jb->events = json_array();
    return jb;
}

static void job_free(job *jb) {
    json_decref(jb->doc), json_decref(jb->progress), json_decref(jb->events);
    free(jb);
}

static job *find_job(e2g_jobs *j, const char *id) {
    for (job *jb = j->head; jb; jb = jb->next)
        if (strcmp(jb->id, id) == 0) return jb;
    return NULL;
}

static void append_job(e2g_jobs *j, job *jb) {
    job **tail = &j->head;
    while (*tail) tail = &(*tail)->next;
    *tail = jb;
}

/* ---- running a job --------------------------------------------------------------- */

/* The trainer's command line for a job (strings owned by *store). */
static char **trainer_argv(const e2g_jobs *j, const job *jb, char store[][4200], int *n) {
    json_t *o = json_object_get(jb->doc, "options");
#define OPT_I(name) (long)json_integer_value(json_object_get(o, name))
#define OPT_R(name) json_number_value(json_object_get(o, name))
    char dir[4096];
    job_path(j, jb->id, "", dir, sizeof dir);
    long steps = OPT_I("steps");
    int k = 0;
    snprintf(store[k++], 4200, "%s", j->trainer);
    snprintf(store[k++], 4200, "finetune");
    snprintf(store[k++], 4200, "--model=%s", j->model);
    snprintf(store[k++], 4200, "--pairs=%s/pairs", dir);
    snprintf(store[k++], 4200, "--concept=%s", json_string_value(json_object_get(jb->doc, "concept")));
    snprintf(store[k++], 4200, "--out=%s/adapter.safetensors", dir);
    snprintf(store[k++], 4200, "--checkpoint=%s/checkpoint.safetensors", dir);
    snprintf(store[k++], 4200, "--checkpoint-every=%ld", steps < 50 ? steps : 50);
    snprintf(store[k++], 4200, "--report=%s/report", dir);
    snprintf(store[k++], 4200, "--events");
    snprintf(store[k++], 4200, "--threads=%d", j->threads);
    snprintf(store[k++], 4200, "--steps=%ld", steps);
    snprintf(store[k++], 4200, "--batch=%ld", OPT_I("batch"));
    snprintf(store[k++], 4200, "--lr=%.9g", OPT_R("lr"));
    snprintf(store[k++], 4200, "--gan-weight=%.9g", OPT_R("gan_weight"));
    snprintf(store[k++], 4200, "--edge-weight=%.9g", OPT_R("edge_weight"));
    snprintf(store[k++], 4200, "--dark-weight=%.9g", OPT_R("dark_weight"));
    snprintf(store[k++], 4200, "--crop=%ld", OPT_I("crop"));
    snprintf(store[k++], 4200, "--train-crops=%ld", OPT_I("train_crops"));
    snprintf(store[k++], 4200, "--eval-every=%ld", OPT_I("eval_every"));
    snprintf(store[k++], 4200, "--eval-pairs=0");
    snprintf(store[k++], 4200, "--seed=%ld", OPT_I("seed"));
    if (json_is_true(json_object_get(o, "rank_search"))) {
        snprintf(store[k++], 4200, "--rank-search");
        snprintf(store[k++], 4200, "--max-rank=%ld", OPT_I("max_rank"));
    } else {
        snprintf(store[k++], 4200, "--rank=%ld", OPT_I("rank"));
    }
    if (OPT_R("keep_fraction") < 1) snprintf(store[k++], 4200, "--keep-fraction=%.9g", OPT_R("keep_fraction"));
#undef OPT_I
#undef OPT_R
    char **argv = e2g_xcalloc((size_t)k + 1, sizeof(char *));
    for (int i = 0; i < k; i++) argv[i] = store[i];
    *n = k;
    return argv;
}

/* The environment of the trainer: ours, with its thread count bounded and
 * OpenMP's idle threads sleeping instead of spinning. */
static char **trainer_env(int threads, char *threads_var) {
    int n = 0;
    while (environ[n]) n++;
    char **env = e2g_xcalloc((size_t)n + 3, sizeof(char *));
    int k = 0;
    for (int i = 0; i < n; i++)
        if (strncmp(environ[i], "OMP_NUM_THREADS=", 16) && strncmp(environ[i], "OMP_WAIT_POLICY=", 16))
            env[k++] = environ[i];
    sprintf(threads_var, "OMP_NUM_THREADS=%d", threads);
    env[k++] = threads_var;
    env[k++] = "OMP_WAIT_POLICY=PASSIVE";
    return env;
}

/* Starts the trainer with its stdout on a pipe (returned in *out_fd) and
 * its stderr appended to trainer.log.  Only async-signal-safe calls run
 * between fork and exec. */
static pid_t spawn_trainer(const e2g_jobs *j, const job *jb, int *out_fd, char *err) {
    static char store[40][4200];
    char log_path[4096], threads_var[32];
    int argc;
    char **argv = trainer_argv(j, jb, store, &argc), **env = trainer_env(j->threads, threads_var);
    job_path(j, jb->id, "trainer.log", log_path, sizeof log_path);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644), fds[2] = {-1, -1};
    pid_t parent = getpid(), pid = -1;
    if (log_fd < 0 || pipe2(fds, O_CLOEXEC) != 0) {
        e2g_fail(err, "cannot prepare the trainer's output: %s", strerror(errno));
    } else if ((pid = fork()) < 0) {
        e2g_fail(err, "cannot start the trainer: %s", strerror(errno));
    } else if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        setpriority(PRIO_PROCESS, 0, j->nice);
        if (j->nice >= 19) { /* the lowest: SCHED_IDLE, the CPU only when serving leaves it idle */
            struct sched_param idle = {0};
            sched_setscheduler(0, SCHED_IDLE, &idle);
        }
        sigset_t none; /* the server blocks SIGTERM and ignores SIGPIPE; the trainer must not */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(fds[1], 1) < 0 || dup2(log_fd, 2) < 0) _exit(127);
        close_range(3, ~0U, 0); /* no socket or file of the server leaks into the trainer */
        execve(argv[0], argv, env);
        _exit(127);
    }
    if (log_fd >= 0) close(log_fd);
    if (fds[1] >= 0) close(fds[1]);
    if (pid < 0 && fds[0] >= 0) close(fds[0]), fds[0] = -1;
    *out_fd = fds[0];
    free(argv), free(env);
    return pid;
}

/* The last non-empty line of the trainer's log: why it failed. */
static void last_log_line(const e2g_jobs *j, const job *jb, char *out, size_t len) {
    char path[4096], line[1024];
    job_path(j, jb->id, "trainer.log", path, sizeof path);
    snprintf(out, len, "the trainer failed without a message");
    FILE *f = fopen(path, "re");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0]) snprintf(out, len, "%.200s", line);
    }
    fclose(f);
}

/* Registers the finished adapter as a concept; its result goes in the
 * record.  Called with the lock held. */
static int register_adapter(e2g_jobs *j, job *jb, char *err) {
    char path[4096];
    job_path(j, jb->id, "adapter.safetensors", path, sizeof path);
    FILE *f = fopen(path, "rbe");
    if (!f) return e2g_fail(err, "the trainer wrote no adapter");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *data = size > 0 ? e2g_xmalloc((size_t)size) : NULL;
    int ok = size > 0 && fread(data, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    int created, rc = ok ? e2g_registry_put(j->registry, json_string_value(json_object_get(jb->doc, "concept")),
                                            data, (size_t)size, &created, err)
                         : e2g_fail(err, "cannot read %s", path);
    free(data);
    if (rc) return -1;
    job_path(j, jb->id, "report/report.json", path, sizeof path);
    json_t *report = json_load_file(path, 0, NULL), *final = json_object_get(report, "final");
    json_object_set_new(jb->doc, "result",
                        json_pack("{s:I,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?}", "adapter_bytes", (json_int_t)size,
                                  "psnr", json_object_get(final, "mean_psnr"), "ssim",
                                  json_object_get(final, "mean_ssim"), "identity_psnr",
                                  json_object_get(final, "mean_identity_psnr"), "ranks",
                                  json_object_get(report, "ranks"), "trainable_params",
                                  json_object_get(report, "trainable_params"), "wall_s",
                                  json_object_get(json_object_get(report, "budget"), "total_wall_s")));
    json_decref(report);
    job_path(j, jb->id, "checkpoint.safetensors", path, sizeof path);
    unlink(path);
    return 0;
}

/* Runs one job to its end (called without the lock). */
static void run_job(e2g_jobs *j, job *jb) {
    char err[E2G_ERR_LEN];
    int fd;
    pthread_mutex_lock(&j->mu);
    pid_t pid = spawn_trainer(j, jb, &fd, err);
    jb->pid = pid > 0 ? pid : 0;
    if (pid > 0 && jb->cancel) kill(pid, SIGTERM); /* cancelled while starting */
    if (pid < 0) {
        set_state(j, jb, E2G_JOB_FAILED, err);
        pthread_mutex_unlock(&j->mu);
        return;
    }
    pthread_mutex_unlock(&j->mu);
    FILE *out = fdopen(fd, "r");
    char *line = NULL;
    size_t cap = 0;
    while (out && getline(&line, &cap, out) > 0) {
        json_t *ev = json_loads(line, 0, NULL);
        if (!json_is_object(ev) || !json_is_string(json_object_get(ev, "event"))) {
            json_decref(ev);
            continue;
        }
        pthread_mutex_lock(&j->mu);
        add_event(j, jb, ev);
        pthread_mutex_unlock(&j->mu);
    }
    free(line);
    if (out) fclose(out);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&j->mu);
    jb->pid = 0;
    if (jb->cancel) {
        char path[4096];
        job_path(j, jb->id, "checkpoint.safetensors", path, sizeof path);
        unlink(path);
        set_state(j, jb, E2G_JOB_CANCELLED, NULL);
    } else if (j->stopping) {
        E2G_LOG(E2G_LOG_INFO, "job %s: stopped with the server; it resumes at the next start", jb->id);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        if (register_adapter(j, jb, err) == 0) set_state(j, jb, E2G_JOB_SUCCEEDED, NULL);
        else set_state(j, jb, E2G_JOB_FAILED, err);
    } else {
        char why[600];
        last_log_line(j, jb, err, sizeof err);
        if (WIFSIGNALED(status)) snprintf(why, sizeof why, "the trainer was killed by signal %d: %s", WTERMSIG(status), err);
        else snprintf(why, sizeof why, "the trainer exited with status %d: %s", WEXITSTATUS(status), err);
        set_state(j, jb, E2G_JOB_FAILED, why);
    }
    pthread_mutex_unlock(&j->mu);
}

static void *runner_main(void *arg) {
    e2g_jobs *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stopping) {
        job *next = NULL;
        for (job *jb = j->head; jb && !next; jb = jb->next)
            if (job_state(jb) == E2G_JOB_QUEUED) next = jb;
        if (!next) {
            pthread_cond_wait(&j->wake, &j->mu);
            continue;
        }
        json_object_set_new(next->doc, "attempts",
                            json_integer(json_integer_value(json_object_get(next->doc, "attempts")) + 1));
        next->phase_offset = 0;
        set_state(j, next, E2G_JOB_RUNNING, NULL);
        pthread_mutex_unlock(&j->mu);
        run_job(j, next);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* ---- loading ------------------------------------------------------------------ */

/* Reads one job folder; interrupted jobs are queued again or failed. */
static void load_job(e2g_jobs *j, const char *id) {
    char path[4096];
    job_path(j, id, "job.json", path, sizeof path);
    json_t *doc = json_load_file(path, 0, NULL);
    if (!json_is_object(doc) || !json_is_object(json_object_get(doc, "options"))) {
        E2G_LOG(E2G_LOG_WARN, "jobs: %s has no readable job.json; skipped", id);
        json_decref(doc);
        return;
    }
    job *jb = job_new(id, doc);
    job_path(j, id, "events.jsonl", path, sizeof path);
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0) {
        json_t *ev = json_loads(line, 0, NULL); /* a torn last line is skipped */
        if (json_is_object(ev)) {
            apply_event(jb, ev);
            json_array_append_new(jb->events, ev);
        } else {
            json_decref(ev);
        }
    }
    free(line);
    if (f) fclose(f);
    append_job(j, jb);
    if (!job_active(jb)) return;
    long attempts = (long)json_integer_value(json_object_get(doc, "attempts"));
    if (attempts >= j->max_attempts) {
        char why[160];
        snprintf(why, sizeof why, "interrupted %ld times (server restarts); not resumed again", attempts);
        set_state(j, jb, E2G_JOB_FAILED, why);
    } else {
        set_state(j, jb, E2G_JOB_QUEUED, NULL);
        E2G_LOG(E2G_LOG_INFO, "job %s: resumed after a restart", id);
    }
}

static int compare_created(const void *a, const void *b) {
    double x = json_number_value(json_object_get((*(job *const *)a)->doc, "created_at"));
    double y = json_number_value(json_object_get((*(job *const *)b)->doc, "created_at"));
    return (x > y) - (x < y);
}

/* Orders the loaded jobs by creation time. */
static void sort_jobs(e2g_jobs *j) {
    int n = 0;
    for (job *jb = j->head; jb; jb = jb->next) n++;
    if (n < 2) return;
    job **all = e2g_xmalloc(n * sizeof(job *));
    n = 0;
    for (job *jb = j->head; jb; jb = jb->next) all[n++] = jb;
    qsort(all, (size_t)n, sizeof *all, compare_created);
    for (int i = 0; i < n; i++) all[i]->next = i + 1 < n ? all[i + 1] : NULL;
    j->head = all[0];
    free(all);
}

int e2g_jobs_open(e2g_jobs **out, const e2g_jobs_config *cfg, e2g_registry *registry, char *err) {
    if (mkdir(cfg->dir, 0755) != 0 && errno != EEXIST)
        return e2g_fail(err, "cannot create the jobs folder %s: %s", cfg->dir, strerror(errno));
    if (access(cfg->trainer, X_OK) != 0)
        return e2g_fail(err, "the trainer %s is not an executable: %s", cfg->trainer, strerror(errno));
    e2g_jobs *j = e2g_xcalloc(1, sizeof *j);
    j->dir = strdup(cfg->dir), j->trainer = strdup(cfg->trainer), j->model = strdup(cfg->model);
    j->threads = cfg->threads, j->nice = cfg->nice, j->max_attempts = cfg->max_attempts;
    j->registry = registry;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->wake, NULL);
    pthread_cond_init(&j->changed, NULL);
    DIR *d = opendir(cfg->dir);
    struct dirent *e;
    pthread_mutex_lock(&j->mu);
    while (d && (e = readdir(d))) {
        char path[4096];
        if (!strncmp(e->d_name, ".new-", 5)) { /* a submission that never completed */
            snprintf(path, sizeof path, "%s/%s", cfg->dir, e->d_name);
            remove_tree(path);
        } else if (e->d_name[0] != '.') {
            load_job(j, e->d_name);
        }
    }
    if (d) closedir(d);
    sort_jobs(j);
    pthread_mutex_unlock(&j->mu);
    if (pthread_create(&j->runner, NULL, runner_main, j) != 0) {
        e2g_jobs_close(j);
        return e2g_fail(err, "cannot start the job runner");
    }
    *out = j;
    return 0;
}

void e2g_jobs_close(e2g_jobs *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    j->stopping = 1;
    for (job *jb = j->head; jb; jb = jb->next)
        if (jb->pid > 0) kill(jb->pid, SIGTERM), kill(-jb->pid, SIGTERM);
    pthread_cond_broadcast(&j->wake);
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->mu);
    if (j->runner) pthread_join(j->runner, NULL);
    while (j->head) {
        job *next = j->head->next;
        job_free(j->head);
        j->head = next;
    }
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->wake);
    pthread_cond_destroy(&j->changed);
    free(j->dir), free(j->trainer), free(j->model);
    free(j);
}

/* ---- the API ------------------------------------------------------------------ */

/* A file name of an upload: a plain, safe name. */
static int upload_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > 200 || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void new_job_id(char *id) {
    unsigned char r[8] = {0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        uint64_t t = (uint64_t)(wall_clock() * 1e6) ^ (uint64_t)getpid() << 40;
        memcpy(r, &t, sizeof r);
    }
    snprintf(id, E2G_JOB_ID_LEN, "ft-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
             r[6], r[7]);
}

/* Writes the upload into dir/pairs; -1 bad input, -3 write failure. */
static int write_pairs(const char *dir, const e2g_job_file *files, int n, int *pairs, char *err) {
    char path[4400];
    snprintf(path, sizeof path, "%s/pairs", dir);
    if (mkdir(path, 0755) != 0) return e2g_fail(err, "cannot create %s: %s", path, strerror(errno)), -3;
    for (int i = 0; i < n; i++) {
        if (!upload_name_ok(files[i].name))
            return e2g_fail(err, "file name '%s' is not a plain name of A-Za-z0-9._-", files[i].name), -1;
        snprintf(path, sizeof path, "%s/pairs/%s", dir, files[i].name);
        if (access(path, F_OK) == 0) return e2g_fail(err, "two files are named '%s'", files[i].name), -1;
        if (e2g_write_file_atomic(path, files[i].data, files[i].size, err)) return -3;
    }
    snprintf(path, sizeof path, "%s/pairs", dir);
    *pairs = e2g_pairs_count(path, err);
    return *pairs < 0 ? -1 : 0;
}

int e2g_jobs_submit(e2g_jobs *j, const char *name, json_t *options, const e2g_job_file *files,
                    int n, char *id, char *err) {
    if (!e2g_concept_name_ok(name)) return e2g_fail(err, "'%s' is not a valid concept name", name), -1;
    pthread_mutex_lock(&j->mu);
    for (job *jb = j->head; jb; jb = jb->next)
        if (job_active(jb) && !strcmp(json_string_value(json_object_get(jb->doc, "concept")), name)) {
            pthread_mutex_unlock(&j->mu);
            return e2g_fail(err, "job %s already trains '%s'", jb->id, name), -2;
        }
    pthread_mutex_unlock(&j->mu);
    new_job_id(id);
    char tmp[4096], final[4096];
    snprintf(tmp, sizeof tmp, "%s/.new-%s", j->dir, id);
    job_path(j, id, "", final, sizeof final);
    if (mkdir(tmp, 0755) != 0) return e2g_fail(err, "cannot create %s: %s", tmp, strerror(errno)), -3;
    int pairs = 0, rc = write_pairs(tmp, files, n, &pairs, err);
    json_t *doc = json_pack("{s:s,s:s,s:s,s:O,s:i,s:f,s:i,s:n,s:n,s:n,s:n}", "id", id, "concept", name, "state",
                            "queued", "options", options, "pairs", pairs, "created_at", wall_clock(),
                            "attempts", 0, "started_at", "finished_at", "result", "error");
    job *jb = job_new(id, doc);
    if (!rc) { /* job.json inside the folder, then the folder into place */
        snprintf(jb->id, sizeof jb->id, ".new-%s", id);
        rc = save_doc(j, jb, err) ? -3 : 0;
        snprintf(jb->id, sizeof jb->id, "%s", id);
    }
    if (!rc && rename(tmp, final) != 0) {
        e2g_fail(err, "cannot rename %s: %s", tmp, strerror(errno));
        rc = -3;
    }
    if (rc) {
        int full = rc == -3 && (errno == ENOSPC || errno == EDQUOT);
        remove_tree(tmp);
        job_free(jb);
        return full ? -4 : rc;
    }
    pthread_mutex_lock(&j->mu);
    append_job(j, jb);
    add_event(j, jb, json_pack("{s:s,s:s}", "event", "state", "state", "queued"));
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->mu);
    E2G_LOG(E2G_LOG_INFO, "job %s: fine-tune '%s' on %d pairs queued", id, name, pairs);
    return 0;
}

/* The public description of a job.  Called with the lock held. */
static json_t *describe(const job *jb) {
    json_t *d = json_deep_copy(jb->doc);
    json_object_set(d, "progress", jb->progress);
    char link[128];
    snprintf(link, sizeof link, "/v1/finetunes/%s/events", jb->id);
    json_object_set_new(d, "events", json_string(link));
    return d;
}

json_t *e2g_jobs_get(e2g_jobs *j, const char *id) {
    pthread_mutex_lock(&j->mu);
    job *jb = find_job(j, id);
    json_t *d = jb ? describe(jb) : NULL;
    pthread_mutex_unlock(&j->mu);
    return d;
}

json_t *e2g_jobs_list(e2g_jobs *j) {
    json_t *list = json_array();
    pthread_mutex_lock(&j->mu);
    for (job *jb = j->head; jb; jb = jb->next) json_array_insert_new(list, 0, describe(jb));
    pthread_mutex_unlock(&j->mu);
    return list;
}

int e2g_jobs_cancel(e2g_jobs *j, const char *id) {
    pthread_mutex_lock(&j->mu);
    job *jb = find_job(j, id), **link = &j->head;
    int rc = -1;
    if (jb && job_state(jb) == E2G_JOB_QUEUED) {
        set_state(j, jb, E2G_JOB_CANCELLED, NULL);
        rc = 1;
    } else if (jb && job_state(jb) == E2G_JOB_RUNNING) {
        jb->cancel = 1;
        if (jb->pid > 0) kill(jb->pid, SIGTERM), kill(-jb->pid, SIGTERM);
        rc = 1;
    } else if (jb) {
        while (*link != jb) link = &(*link)->next;
        *link = jb->next;
        char path[4096];
        job_path(j, id, "", path, sizeof path);
        remove_tree(path);
        job_free(jb);
        pthread_cond_broadcast(&j->changed);
        rc = 0;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

char *e2g_jobs_events(e2g_jobs *j, const char *id, long from, double wait_s, long *next, int *over) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    double t = deadline.tv_sec + deadline.tv_nsec * 1e-9 + wait_s;
    deadline.tv_sec = (time_t)t;
    deadline.tv_nsec = (long)((t - floor(t)) * 1e9);
    pthread_mutex_lock(&j->mu);
    job *jb;
    while ((jb = find_job(j, id)) && (long)json_array_size(jb->events) <= from && job_active(jb) &&
           !j->stopping)
        if (pthread_cond_timedwait(&j->changed, &j->mu, &deadline) == ETIMEDOUT) break;
    char *text = NULL;
    size_t len = 0;
    *next = from;
    if (jb) {
        FILE *f = open_memstream(&text, &len);
        for (long i = from; i < (long)json_array_size(jb->events); i++) {
            json_t *ev = json_array_get(jb->events, i);
            char *data = json_dumps(ev, JSON_COMPACT);
            fprintf(f, "id: %ld\nevent: %s\ndata: %s\n\n", i, json_string_value(json_object_get(ev, "event")), data);
            free(data);
            *next = i + 1;
        }
        fclose(f);
        if (!len) free(text), text = NULL;
    }
    *over = !jb || (!job_active(jb) && *next >= (long)json_array_size(jb->events)) || j->stopping;
    pthread_mutex_unlock(&j->mu);
    return text;
}

void e2g_jobs_counts(e2g_jobs *j, int counts[E2G_JOB_STATES]) {
    memset(counts, 0, sizeof(int) * E2G_JOB_STATES);
    pthread_mutex_lock(&j->mu);
    for (job *jb = j->head; jb; jb = jb->next) counts[job_state(jb)]++;
    pthread_mutex_unlock(&j->mu);
}
