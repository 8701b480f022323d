/* test_server_faults.c — the real e2gan-server under faults: SIGKILL at
 * random moments of adapter uploads (PUT /v1/concepts/{name}) must leave
 * the old adapter or the new one, whole, never a torn file; an upload to a
 * full disk (a small tmpfs; needs root) is a clean 507 that keeps the old
 * adapter; a corrupt file in the adapter folder is skipped with a log line
 * while the others serve.  (A full disk at a fine-tuning checkpoint is in
 * test_server_jobs.c; SIGKILL during a job is too.) */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adapter.h"
#include "common.h"
#include "server_harness.h"
#include "testutil.h"

#define TOKEN "faults-admin-token-0123456789"
#define AUTH "-H 'Authorization: Bearer " TOKEN "'"

static pid_t server_pid;

static void server_start(void) {
    server_pid = start_server("--admin-token " TOKEN " --max-upload 8M", tmp_path("server.log"), &server_port);
}

/* Two versions of one adapter: v1 is the reference adapter, v2 the same
 * with every lora_B doubled (a different file of the same size). */
static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/e2g_faults_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    sh("mkdir -p %s %s", tmp_path("adapters"), tmp_path("static"));
    sh("cp %s %s", ref_path("g_lora_default_ngf16_adapter.safetensors"), tmp_path("v1.safetensors"));
    char err[E2G_ERR_LEN];
    e2g_model *base;
    e2g_adapter *a;
    ck_assert_msg(e2g_model_load(&base, ref_path("g_default_ngf16_base.safetensors"), err) == 0, "%s", err);
    ck_assert_msg(e2g_adapter_load(&a, base, tmp_path("v1.safetensors"), err) == 0, "%s", err);
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        e2g_layer_shape s;
        e2g_crucial_shape(&base->cfg, l, &s);
        for (size_t i = 0; i < (size_t)s.cout * a->lora->rank[l]; i++) a->lora->B[l][i] *= 2;
    }
    ck_assert_msg(e2g_adapter_save(tmp_path("v2.safetensors"), base, a->lora, "v2", NULL, err) == 0, "%s", err);
    e2g_adapter_free(a);
    e2g_model_free(base);
}

static void teardown(void) {
    if (server_pid > 0) stop_server(server_pid);
    server_pid = 0;
    unmount_tmpfs(tmp_path("adapters"));
    sh("rm -rf %s", tmpdir);
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *x = read_bytes(a, &na), *y = read_bytes(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x), free(y);
    return same;
}

#define PUT_ARGS "-X PUT " AUTH " -H 'Content-Type: application/octet-stream' --data-binary @%s %%PORT/v1/concepts/%s"

/* PUTs a file as concept `name`; returns the status. */
static int put(const char *name, const char *file) {
    response r;
    http(&r, PUT_ARGS, file, name);
    int status = r.status;
    response_free(&r);
    return status;
}

/* An edit with `concept` answers 200 with an image. */
static void assert_edits(const char *concept) {
    response r;
    http(&r, "-X POST --data-binary @%s/tests/data/chelsea.png -H 'Content-Type: image/png' "
             "'%%PORT/v1/edits?concept=%s&format=png'",
         test_source(), concept);
    ck_assert_msg(r.status == 200, "edit with %s: status %d %.*s", concept, r.status, (int)r.len,
                  (const char *)r.body);
    response_free(&r);
}

/* Files in the adapter folder other than NAME.safetensors: temp files
 * left by an upload the kill interrupted.  Counted, not failed: they are
 * hidden names the registry never serves. */
static int stray_files(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A %s | grep -vc '^[^.].*\\.safetensors$'", tmp_path("adapters"));
    FILE *p = popen(cmd, "r");
    int n = 0;
    ck_assert_int_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

#define ROUNDS 24

START_TEST(test_kill_during_upload) {
    server_start();
    ck_assert_int_eq(put("ink", tmp_path("v1.safetensors")), 201);
    char installed[256], v1[256], v2[256]; /* tmp_path's buffers rotate */
    snprintf(installed, sizeof installed, "%s", tmp_path("adapters/ink.safetensors"));
    snprintf(v1, sizeof v1, "%s", tmp_path("v1.safetensors"));
    snprintf(v2, sizeof v2, "%s", tmp_path("v2.safetensors"));
    srand(8);
    int kept_old = 0, got_new = 0;
    for (int round = 0; round < ROUNDS; round++) {
        /* Upload the other version, kill the server at a random moment
         * (before the request, reading the body, validating, writing,
         * renaming, after), and check what the folder holds. */
        const char *old = same_file(installed, v1) ? v1 : v2, *next = old == v1 ? v2 : v1;
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "curl -s -o /dev/null -X PUT " AUTH " -H 'Content-Type: application/octet-stream' "
                 "--data-binary @%s http://127.0.0.1:%d/v1/concepts/ink &",
                 next, server_port);
        ck_assert_int_eq(system(cmd), 0);
        /* Starting curl, the upload and the install take a few ms each: a
         * third of the kills come early, a third late, a third anywhere
         * in 0..40 ms (those land in the middle now and then). */
        int ms = round % 3 == 0 ? rand() % 5 : round % 3 == 1 ? rand() % 40 : 20 + rand() % 100;
        usleep((useconds_t)ms * 1000);
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        if (same_file(installed, old))
            kept_old++;
        else if (same_file(installed, next))
            got_new++;
        else
            ck_abort_msg("round %d: the adapter is neither the old file nor the new one", round);
        server_start();
        response r;
        http(&r, "%%PORT/v1/concepts/ink");
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    assert_edits("ink");
    fprintf(stderr, "kill during upload: %d rounds kept the old adapter, %d got the new one, %d stray temp files\n",
            kept_old, got_new, stray_files());
    ck_assert_msg(kept_old > 0 && got_new > 0, "the kills all landed on one side of the upload");
}
END_TEST

START_TEST(test_upload_to_full_disk) {
    if (mount_tmpfs(tmp_path("adapters"), "1m") != 0) {
        fprintf(stderr, "test_upload_to_full_disk skipped: mounting a tmpfs needs root\n");
        return;
    }
    server_start();
    ck_assert_int_eq(put("ink", tmp_path("v1.safetensors")), 201);
    fill_disk(tmp_path("adapters"));
    response r;
    http(&r, PUT_ARGS, tmp_path("v2.safetensors"), "ink");
    assert_problem(&r, 507, "storage");
    ck_assert_msg(strstr((const char *)r.body, "No space left on device") != NULL, "%.*s", (int)r.len,
                  (const char *)r.body);
    response_free(&r);
    http(&r, PUT_ARGS, tmp_path("v2.safetensors"), "other");
    assert_problem(&r, 507, "storage");
    response_free(&r);
    /* the old adapter is intact and serves; the failed uploads left nothing */
    ck_assert(same_file(tmp_path("adapters/ink.safetensors"), tmp_path("v1.safetensors")));
    ck_assert_int_eq(stray_files(), 1); /* the filler */
    http(&r, "%%PORT/v1/concepts/other");
    assert_problem(&r, 404, "unknown-concept");
    response_free(&r);
    assert_edits("ink");
    /* with room again the upload goes through */
    sh("rm %s", tmp_path("adapters/filler"));
    ck_assert_int_eq(put("ink", tmp_path("v2.safetensors")), 200);
    ck_assert(same_file(tmp_path("adapters/ink.safetensors"), tmp_path("v2.safetensors")));
    assert_edits("ink");
}
END_TEST

START_TEST(test_corrupt_adapter_skipped) {
    size_t n;
    uint8_t *bytes = read_bytes(tmp_path("v1.safetensors"), &n);
    write_bytes(tmp_path("adapters/good.safetensors"), bytes, n);
    write_bytes(tmp_path("adapters/torn.safetensors"), bytes, n / 2);
    bytes[n - 1] ^= 0xff; /* a flipped byte in the data section is still a valid file */
    bytes[8] = '!';       /* a broken JSON header is not */
    write_bytes(tmp_path("adapters/garbled.safetensors"), bytes, n);
    free(bytes);
    server_start();
    char *log = (char *)read_bytes(tmp_path("server.log"), &n);
    ck_assert_msg(strstr(log, "skipping adapter") && strstr(log, "torn.safetensors"), "%s", log);
    ck_assert_msg(strstr(log, "garbled.safetensors"), "%s", log);
    free(log);
    response r;
    http(&r, "%%PORT/v1/concepts");
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr((const char *)r.body, "\"good\""));
    ck_assert_ptr_null(strstr((const char *)r.body, "\"torn\""));
    ck_assert_ptr_null(strstr((const char *)r.body, "\"garbled\""));
    response_free(&r);
    http(&r, "%%PORT/v1/concepts/torn");
    assert_problem(&r, 404, "unknown-concept");
    response_free(&r);
    assert_edits("good");
    assert_edits("good:0.5,base-a:0.5");
}
END_TEST

int main(void) {
    Suite *s = suite_create("server_faults");
    TCase *tc = tcase_create("faults");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_kill_during_upload);
    tcase_add_test(tc, test_upload_to_full_disk);
    tcase_add_test(tc, test_corrupt_adapter_skipped);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
