/* test_server_jobs.c — fine-tuning jobs over HTTP, end to end: the real
 * e2gan-server (reference base model, ngf 16) runs real `e2gan finetune`
 * children on pairs uploaded as multipart (crops of a photo and their
 * colour inversion).  A job must stream its progress as server-sent
 * events, finish, and serve its adapter as a new concept; bad uploads get
 * the designed problem statuses; DELETE cancels a running job and kills
 * its trainer; a server killed with SIGKILL mid-job takes its trainer with
 * it, and after a restart the job resumes from its checkpoint; a full
 * disk at a checkpoint fails the job cleanly and keeps the last one. */
#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "safetensors.h"
#include "server_harness.h"
#include "testutil.h"

#define TOKEN "jobs-admin-token-0123456789"
#define AUTH "-H 'Authorization: Bearer " TOKEN "'"
#define N_PAIRS 4

static pid_t server_pid;
static char pair_args[4096]; /* curl -F arguments of the pair files */

static void job_server_start(void) {
    char extra[1024];
    snprintf(extra, sizeof extra,
             "--admin-token " TOKEN " --jobs-dir %s --max-upload 1M --finetune-threads 1",
             tmp_path("jobs"));
    server_pid = start_server(extra, tmp_path("server.log"), &server_port);
}

/* Pairs: crops of the test photo (src) and their colour inversion (dst). */
static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/e2g_jobs_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    sh("mkdir -p %s %s %s", tmp_path("adapters"), tmp_path("static"), tmp_path("pairs"));
    char err[E2G_ERR_LEN], path[1024];
    e2g_image photo = {0};
    snprintf(path, sizeof path, "%s/tests/data/chelsea.png", test_source());
    ck_assert_msg(e2g_image_read_file(&photo, path, 1L << 24, err) == 0, "%s", err);
    pair_args[0] = '\0';
    for (int k = 0; k < N_PAIRS; k++) {
        e2g_image src = {64, 48, malloc(64 * 48 * 3)}, dst = {64, 48, malloc(64 * 48 * 3)};
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 64; x++)
                for (int c = 0; c < 3; c++) {
                    uint8_t v = photo.rgb[((size_t)(y + 20 * k) * photo.width + x + 30 * k) * 3 + c];
                    src.rgb[(y * 64 + x) * 3 + c] = v;
                    dst.rgb[(y * 64 + x) * 3 + c] = (uint8_t)(255 - v);
                }
        for (int role = 0; role < 2; role++) {
            char name[64];
            snprintf(name, sizeof name, "pairs/p%d.%s.png", k, role ? "dst" : "src");
            ck_assert_msg(e2g_image_write_file(tmp_path(name), role ? &dst : &src, 90, err) == 0, "%s", err);
            snprintf(pair_args + strlen(pair_args), sizeof pair_args - strlen(pair_args), " -F 'file=@%s'",
                     tmp_path(name));
        }
        e2g_image_free(&src), e2g_image_free(&dst);
    }
    e2g_image_free(&photo);
    job_server_start();
}

static void teardown(void) {
    stop_server(server_pid);
    unmount_tmpfs(tmp_path("jobs"));
    sh("rm -rf %s", tmpdir);
}

/* POSTs a job for `concept` with extra curl arguments; returns its id
 * (static buffer) after checking the 202 answer. */
static const char *submit(const char *concept, const char *options) {
    static char id[64];
    response r;
    http(&r, "-X POST " AUTH " -F concept=%s %s %s %%PORT/v1/finetunes", concept, options, pair_args);
    ck_assert_msg(r.status == 202, "status %d: %.*s", r.status, (int)r.len, (const char *)r.body);
    json_t *j = json_body(&r);
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "id")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "concept")), concept);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "pairs")), N_PAIRS);
    char location[128];
    snprintf(location, sizeof location, "/v1/finetunes/%s", id);
    assert_header(&r, "Location", location);
    json_decref(j);
    response_free(&r);
    return id;
}

/* GET /v1/finetunes/{id} as JSON (caller decrefs). */
static json_t *job_status(const char *id) {
    response r;
    http(&r, AUTH " %%PORT/v1/finetunes/%s", id);
    ck_assert_msg(r.status == 200, "status %d", r.status);
    json_t *j = json_body(&r);
    response_free(&r);
    return j;
}

static const char *state_of(json_t *job) { return json_string_value(json_object_get(job, "state")); }

/* Polls until the job's state is `state` and its progress step >= min_step. */
static json_t *wait_for(const char *id, const char *state, long min_step, double seconds) {
    for (int i = 0; i < (int)(seconds * 10); i++) {
        json_t *j = job_status(id);
        long step = (long)json_integer_value(json_object_get(json_object_get(j, "progress"), "step"));
        if (!strcmp(state_of(j), state) && step >= min_step) return j;
        ck_assert_msg(strcmp(state_of(j), "failed") != 0 || !strcmp(state, "failed"), "job failed: %s",
                      json_string_value(json_object_get(j, "error")));
        json_decref(j);
        usleep(100000);
    }
    ck_abort_msg("job %s never reached %s at step %ld", id, state, min_step);
    return NULL;
}

/* Whether a process whose command line holds `text` is alive (the
 * pattern [x]yz matches xyz but not the shell that runs pgrep). */
static int process_alive(const char *text) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "pgrep -f '[%c]%s' > /dev/null", text[0], text + 1);
    return system(cmd) == 0;
}

START_TEST(test_job_end_to_end) {
    const char *id = submit("inverted", "-F steps=24 -F batch=2 -F crop=32 -F train_crops=32 -F eval_every=8 "
                                        "-F keep_fraction=0.5 -F rank_search=true -F max_rank=4 "
                                        "-F edge_weight=20 -F dark_weight=2");
    char job_id[64];
    snprintf(job_id, sizeof job_id, "%s", id);
    /* The event stream ends when the job does; it replays from the start. */
    response ev;
    http(&ev, AUTH " -N %%PORT/v1/finetunes/%s/events", job_id);
    ck_assert_int_eq(ev.status, 200);
    assert_header(&ev, "Content-Type", "text/event-stream");
    const char *text = (const char *)ev.body;
    const char *want[] = {"event: state\ndata: {\"event\":\"state\",\"state\":\"queued\"}",
                          "\"state\":\"running\"", "event: phase", "\"phase\":\"probe\"", "\"phase\":\"rank-search\"",
                          "\"phase\":\"train\"", "event: step", "\"edge\":", "\"dark_l1\":", "event: eval",
                          "\"state\":\"succeeded\""};
    const char *at = text;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) { /* present, in this order */
        const char *found = strstr(at, want[i]);
        ck_assert_msg(found != NULL, "event stream lacks (or misorders) %s:\n%s", want[i], text);
        at = found;
    }
    long last_id = -1;
    for (const char *p = strstr(text, "id: "); p; p = strstr(p + 1, "\nid: ")) {
        long n = atol(p[0] == '\n' ? p + 5 : p + 4);
        ck_assert_int_eq(n, last_id + 1);
        last_id = n;
    }
    response_free(&ev);
    /* Resuming the stream after the last id gives nothing more and ends. */
    http(&ev, AUTH " -H 'Last-Event-ID: %ld' %%PORT/v1/finetunes/%s/events", last_id, job_id);
    ck_assert_int_eq(ev.status, 200);
    ck_assert_uint_eq(ev.len, 0);
    response_free(&ev);

    json_t *j = job_status(job_id);
    ck_assert_str_eq(state_of(j), "succeeded");
    json_t *progress = json_object_get(j, "progress"), *result = json_object_get(j, "result");
    ck_assert_int_eq(json_integer_value(json_object_get(progress, "step")), 24);
    ck_assert_int_eq(json_integer_value(json_object_get(progress, "steps")), 24);
    ck_assert(json_number_value(json_object_get(result, "psnr")) > 5);
    ck_assert(json_integer_value(json_object_get(result, "adapter_bytes")) > 0);
    ck_assert(json_is_object(json_object_get(result, "ranks")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "attempts")), 1);
    json_t *options = json_object_get(j, "options");
    ck_assert_double_eq(json_number_value(json_object_get(options, "edge_weight")), 20);
    ck_assert_double_eq(json_number_value(json_object_get(options, "dark_weight")), 2);
    json_decref(j);

    /* The adapter is a concept now, and edits with it. */
    response r;
    http(&r, "%%PORT/v1/concepts/inverted");
    ck_assert_int_eq(r.status, 200);
    json_t *c = json_body(&r);
    ck_assert_str_eq(json_string_value(json_object_get(c, "kind")), "adapter");
    json_decref(c);
    response_free(&r);
    http(&r, "-X POST --data-binary @%s -H 'Content-Type: image/png' '%%PORT/v1/edits?concept=inverted'",
         tmp_path("pairs/p0.src.png"));
    assert_image(&r, E2G_IMAGE_PNG, 64, 48);
    response_free(&r);

    /* Listed, counted in /metrics; a second job for a taken name is 409. */
    http(&r, AUTH " %%PORT/v1/finetunes");
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr((const char *)r.body, job_id));
    response_free(&r);
    http(&r, "%%PORT/metrics");
    ck_assert_ptr_nonnull(strstr((const char *)r.body, "e2gan_finetune_jobs{state=\"succeeded\"} 1"));
    ck_assert_ptr_nonnull(strstr((const char *)r.body, "route=\"finetunes\""));
    response_free(&r);
    http(&r, "-X POST " AUTH " -F concept=inverted %s %%PORT/v1/finetunes", pair_args);
    assert_problem(&r, 409, "concept-exists");
    response_free(&r);

    /* DELETE of a finished job removes it. */
    http(&r, "-X DELETE " AUTH " %%PORT/v1/finetunes/%s", job_id);
    ck_assert_int_eq(r.status, 204);
    response_free(&r);
    http(&r, AUTH " %%PORT/v1/finetunes/%s", job_id);
    assert_problem(&r, 404, "unknown-job");
    response_free(&r);
}
END_TEST

START_TEST(test_job_errors) {
#define POST_JOB "-X POST " AUTH " "
#define JOBS " %%PORT/v1/finetunes"
    http_problem(401, "unauthorized", "-X POST -F concept=x %s" JOBS, pair_args);
    http_problem(415, "unsupported-media-type", POST_JOB "-H 'Content-Type: application/json' --data '{}'" JOBS);
    http_problem(400, "bad-name", POST_JOB "%s" JOBS, pair_args);
    http_problem(400, "bad-name", POST_JOB "-F concept=../up %s" JOBS, pair_args);
    http_problem(400, "bad-request", POST_JOB "-F concept=x -F steps=0 %s" JOBS, pair_args);
    http_problem(400, "bad-request", POST_JOB "-F concept=x -F crop=30 %s" JOBS, pair_args);
    http_problem(400, "bad-request", POST_JOB "-F concept=x -F edge_weight=-1 %s" JOBS, pair_args);
    http_problem(400, "bad-request", POST_JOB "-F concept=x -F dark_weight=1e9 %s" JOBS, pair_args);
    http_problem(400, "bad-request", POST_JOB "-F concept=x -F colour=red %s" JOBS, pair_args);
    http_problem(409, "base-concept", POST_JOB "-F concept=base-a %s" JOBS, pair_args);
    /* one pair is too few; a src without its dst; an unsafe file name */
    http_problem(422, "bad-pairs", POST_JOB "-F concept=x -F 'file=@%s' -F 'file=@%s'" JOBS,
                 tmp_path("pairs/p0.src.png"), tmp_path("pairs/p0.dst.png"));
    http_problem(422, "bad-pairs", POST_JOB "-F concept=x %s -F 'file=@%s;filename=p9.src.png'" JOBS, pair_args,
                 tmp_path("pairs/p0.src.png"));
    http_problem(422, "bad-pairs", POST_JOB "-F concept=x %s -F 'file=@%s;filename=../../p9.src.png'" JOBS,
                 pair_args, tmp_path("pairs/p0.src.png"));
    /* not an image; over the upload limit (1M) */
    write_bytes(tmp_path("notes.txt"), "not an image", 12);
    http_problem(415, "unsupported-media-type", POST_JOB "-F concept=x %s -F 'file=@%s;filename=p9.src.png'" JOBS,
                 pair_args, tmp_path("notes.txt"));
    uint8_t *big = calloc(2 << 20, 1);
    write_bytes(tmp_path("big.bin"), big, 2 << 20);
    free(big);
    http_problem(413, "body-too-large", POST_JOB "-F concept=x -F 'file=@%s;filename=p9.src.png'" JOBS,
                 tmp_path("big.bin"));
    /* unknown jobs; nothing was left behind by the refused uploads */
    http_problem(404, "unknown-job", AUTH JOBS "/ft-0000000000000000");
    http_problem(404, "unknown-job", "-X DELETE " AUTH JOBS "/ft-0000000000000000");
    http_problem(404, "unknown-job", AUTH JOBS "/ft-0000000000000000/other");
#undef POST_JOB
#undef JOBS
    response r;
    http(&r, AUTH " %%PORT/v1/finetunes");
    json_t *j = json_body(&r);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "jobs")), 0);
    json_decref(j);
    response_free(&r);
    sh("test -z \"$(ls -A %s)\"", tmp_path("jobs"));
}
END_TEST

START_TEST(test_job_cancel) {
    const char *id = submit("long", "-F steps=100000 -F batch=2 -F crop=32 -F train_crops=16 -F rank_search=false "
                                    "-F keep_fraction=1");
    char job_id[64];
    snprintf(job_id, sizeof job_id, "%s", id);
    json_decref(wait_for(job_id, "running", 10, 60));
    ck_assert(process_alive(job_id));
    response r;
    http(&r, "-X DELETE " AUTH " %%PORT/v1/finetunes/%s", job_id);
    ck_assert_int_eq(r.status, 202);
    response_free(&r);
    json_decref(wait_for(job_id, "cancelled", 0, 30));
    ck_assert(!process_alive(job_id));
    http(&r, "%%PORT/v1/concepts/long");
    assert_problem(&r, 404, "unknown-concept");
    response_free(&r);
}
END_TEST

START_TEST(test_job_survives_restart) {
    const char *id = submit("resumed", "-F steps=100000 -F batch=2 -F crop=32 -F train_crops=16 "
                                       "-F rank_search=false -F keep_fraction=1");
    char job_id[64];
    snprintf(job_id, sizeof job_id, "%s", id);
    /* checkpoints are every 50 steps: wait past the first */
    json_decref(wait_for(job_id, "running", 60, 120));
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    for (int i = 0; i < 50 && process_alive(job_id); i++) usleep(100000);
    ck_assert_msg(!process_alive(job_id), "the trainer outlived its server");

    job_server_start();
    json_t *j = wait_for(job_id, "running", 61, 120);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "attempts")), 2);
    json_decref(j);
    /* The progress read above may still be the first attempt's (its events
     * stay in events.jsonl): the new trainer says where it resumed once it
     * has loaded its checkpoint, in a moment on a busy machine. */
    char log_path[256];
    snprintf(log_path, sizeof log_path, "jobs/%s/trainer.log", job_id);
    char *log = NULL;
    for (int i = 0; i < 600; i++) {
        size_t n;
        free(log);
        log = (char *)read_bytes(tmp_path(log_path), &n);
        char *first = strstr(log, "data: "), *second = first ? strstr(first + 1, "data: ") : NULL;
        if (strstr(log, "resuming at step") || (second && strstr(second, "\nstep "))) break; /* or started over */
        usleep(100000);
    }
    ck_assert_msg(strstr(log, "resuming at step") != NULL, "the job started over:\n%s", log);
    free(log);
    response r;
    http(&r, "-X DELETE " AUTH " %%PORT/v1/finetunes/%s", job_id);
    ck_assert_int_eq(r.status, 202);
    response_free(&r);
    json_decref(wait_for(job_id, "cancelled", 0, 30));
}
END_TEST

/* A full disk when the trainer writes a checkpoint (the jobs folder on a
 * small tmpfs, filled once the first checkpoint is written): the job
 * fails with an error, the server goes on serving, the last checkpoint is
 * whole and no temp file is left; a restart with room again neither loses
 * nor corrupts the job.  Needs root to mount the tmpfs. */
START_TEST(test_job_checkpoint_full_disk) {
    stop_server(server_pid);
    if (mount_tmpfs(tmp_path("jobs"), "8m") != 0) {
        fprintf(stderr, "test_job_checkpoint_full_disk skipped: mounting a tmpfs needs root\n");
        job_server_start();
        return;
    }
    job_server_start();
    const char *id = submit("full", "-F steps=100000 -F batch=2 -F crop=32 -F train_crops=16 "
                                    "-F rank_search=false -F keep_fraction=1");
    char job_id[64], dir[128], path[256];
    snprintf(job_id, sizeof job_id, "%s", id);
    snprintf(dir, sizeof dir, "jobs/%s", job_id);
    json_decref(wait_for(job_id, "running", 60, 120)); /* past the checkpoint at step 50 */
    fill_disk(tmp_path("jobs"));
    json_t *j = wait_for(job_id, "failed", 0, 120);
    const char *error = json_string_value(json_object_get(j, "error"));
    ck_assert_msg(error && strstr(error, "No space left on device"), "job error: %s", error);
    json_decref(j);

    response r;
    http(&r, "%%PORT/readyz");
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    http(&r, "-X POST --data-binary @%s -H 'Content-Type: image/png' '%%PORT/v1/edits?concept=base-a'",
         tmp_path("pairs/p0.src.png"));
    assert_image(&r, E2G_IMAGE_PNG, 64, 48);
    response_free(&r);

    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
    e2g_st_file *f;
    char err[E2G_ERR_LEN];
    ck_assert_msg(e2g_st_open(&f, tmp_path(path), err) == 0, "%s", err);
    e2g_st_close(f);
    sh("! ls -A %s | grep -i tmp", tmp_path(dir));

    /* With room again a restart finds the job failed, or, when the full
     * disk also kept the server from recording that (job.json still says
     * running), resumes it from that checkpoint. */
    sh("rm %s", tmp_path("jobs/filler"));
    stop_server(server_pid);
    job_server_start();
    j = job_status(job_id);
    long attempts = (long)json_integer_value(json_object_get(j, "attempts"));
    fprintf(stderr, "full disk at a checkpoint: after a restart the job is %s (attempts %ld)\n", state_of(j), attempts);
    ck_assert_msg(!strcmp(state_of(j), "failed") || attempts == 2, "state %s, attempts %ld", state_of(j), attempts);
    json_decref(j);
    if (attempts == 2) {
        json_decref(wait_for(job_id, "running", 51, 120));
        http(&r, "-X DELETE " AUTH " %%PORT/v1/finetunes/%s", job_id);
        ck_assert_int_eq(r.status, 202);
        response_free(&r);
        json_decref(wait_for(job_id, "cancelled", 0, 30));
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("server_jobs");
    TCase *tc = tcase_create("jobs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_job_end_to_end);
    tcase_add_test(tc, test_job_errors);
    tcase_add_test(tc, test_job_cancel);
    tcase_add_test(tc, test_job_survives_restart);
    tcase_add_test(tc, test_job_checkpoint_full_disk);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
