/* test_cli.c — the e2gan command as a user runs it: `edit` on a real photo
 * gives PyTorch's edit to within 8-bit rounding (tests/refs/model_refs.py,
 * edit_case), merged and unmerged; init/info/bench produce what they promise;
 * bad input gets exit status 1 and one clear line, never a crash. */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "testutil.h"

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/e2g_cli_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Runs `e2gan ARGS`, capturing stdout+stderr into out (may be NULL);
 * returns the exit status (or -1 when it died from a signal). */
static int run_cli(char *out, size_t out_len, const char *fmt, ...) {
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", test_bin(), args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = out ? fread(out, 1, out_len - 1, p) : 0;
    if (out) out[n] = '\0';
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char *ref_file(const char *name) {
    static char path[4][1024];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", getenv("E2G_REFS"), name);
    return p;
}

/* Edits the photo with the CLI and compares with PyTorch's 8-bit result:
 * every channel within 1 (rounding of values PyTorch computed in float64),
 * and off-by-one in under 1% of them. */
static void check_edit(int merged) {
    e2g_st_file *f = ref_open("edit_photo");
    char photo[1024], out_png[300], log[4096];
    snprintf(photo, sizeof photo, "%s/%s", test_source(), e2g_st_meta(f, "photo"));
    for (int i = 0; i < 2; i++) {
        char key[32];
        snprintf(key, sizeof key, "concept_%d", i);
        const char *concept = e2g_st_meta(f, key);
        snprintf(key, sizeof key, "strength_%d", i);
        double strength = ref_meta_double(f, key);
        snprintf(out_png, sizeof out_png, "%s/edit_%d.png", tmpdir, i);
        int rc = run_cli(log, sizeof log,
                         "edit --model %s --adapter %s --concept %s --strength %g %s %s %s",
                         ref_file(e2g_st_meta(f, "base_file")), ref_file(e2g_st_meta(f, "adapter_file")),
                         concept, strength, merged ? "--merged" : "", photo, out_png);
        ck_assert_msg(rc == 0, "e2gan edit failed: %s", log);
        e2g_image im = {0};
        char err[E2G_ERR_LEN];
        ck_assert_msg(e2g_image_read_file(&im, out_png, 1L << 24, err) == 0, "%s", err);
        snprintf(key, sizeof key, "expected_%d", i);
        size_t n;
        float *want = ref_tensor(f, key, &n);
        ck_assert_uint_eq(n, (size_t)im.width * im.height * 3);
        int max_diff = 0;
        size_t off = 0;
        for (size_t j = 0; j < n; j++) {
            int d = abs((int)im.rgb[j] - (int)want[j]);
            max_diff = d > max_diff ? d : max_diff;
            off += d != 0;
        }
        fprintf(stderr, "edit %s%s: %zu of %zu channels differ, max by %d\n", concept,
                merged ? " (merged)" : "", off, n, max_diff);
        ck_assert_int_le(max_diff, 1);
        ck_assert_uint_lt(off, n / 100);
        e2g_image_free(&im);
    }
    e2g_st_close(f);
}

START_TEST(test_edit_matches_pytorch) { check_edit(0); }
END_TEST

START_TEST(test_edit_merged_matches_pytorch) { check_edit(1); }
END_TEST

START_TEST(test_init_info_bench) {
    char log[8192], model[300];
    snprintf(model, sizeof model, "%s/base.safetensors", tmpdir);
    ck_assert_int_eq(run_cli(log, sizeof log, "init --ngf 8 --concepts a,b,c --seed 3 --out %s", model), 0);
    ck_assert_int_eq(run_cli(log, sizeof log, "info %s", model), 0);
    /* ngf 8: the parameter count printed by `info` covers G's tensors */
    ck_assert_msg(strstr(log, "format: e2gan-base") && strstr(log, "concepts: [\"a\",\"b\",\"c\"]"),
                  "info output: %s", log);
    ck_assert_msg(strstr(log, "concepts                                         F32  [3, 8, 32]"),
                  "info output: %s", log);
    ck_assert_int_eq(run_cli(log, sizeof log, "bench --model %s --size 32 --batch 2 --iters 2 --threads 1", model), 0);
    char *last = strrchr(log, '{');
    ck_assert_msg(last && strstr(last, "\"ms_per_batch\": ") && strstr(last, "\"images_per_s\": "),
                  "bench's last line is not the JSON: %s", log);
    double ms = -1;
    ck_assert_int_eq(sscanf(last, "{\"ms_per_batch\": %lf", &ms), 1);
    ck_assert(ms > 0);
}
END_TEST

/* Each bad input: exit status 1 (2 for usage) and a message naming the problem. */
START_TEST(test_bad_input) {
    char log[4096], model[300], bad[300], junk[300];
    snprintf(model, sizeof model, "%s/m.safetensors", tmpdir);
    snprintf(bad, sizeof bad, "%s/truncated.png", tmpdir);
    snprintf(junk, sizeof junk, "%s/junk.safetensors", tmpdir);
    ck_assert_int_eq(run_cli(log, sizeof log, "init --ngf 8 --concepts a --out %s", model), 0);
    FILE *fp = fopen(junk, "wb");
    fputs("not a safetensors file", fp);
    fclose(fp);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "head -c 300 %s/tests/data/chelsea.png > %s", test_source(), bad);
    ck_assert_int_eq(system(cmd), 0);
    char photo[600];
    snprintf(photo, sizeof photo, "%s/tests/data/chelsea.png", test_source());

    struct {
        const char *args, *expect;
        int status;
    } cases[] = {
        {"edit --model %s --concept nope %s %s/o.png", "unknown concept 'nope'", 1},
        {"edit --model %s --concept a %s %s/o.gif", "", 1},
        {"edit --model %s --concept a:0.5,b %s %s/o.png", "blend", 1},
        {"edit --model %s --concept a --strength 3 %s %s/o.png", "strength", 1},
        {"edit --model %s --concept a --max-pixels 1000 %s %s/o.png", "pixels", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[1500];
        snprintf(args, sizeof args, cases[i].args, model, photo, tmpdir);
        int rc = run_cli(log, sizeof log, "%s", args);
        ck_assert_msg(rc == cases[i].status && strstr(log, cases[i].expect) && strstr(log, "e2gan edit: "),
                      "'%s' gave %d: %s", args, rc, log);
    }
    int rc = run_cli(log, sizeof log, "edit --model %s --concept a %s %s/o.png", model, bad, tmpdir);
    ck_assert_msg(rc == 1 && strstr(log, "e2gan edit: "), "truncated PNG gave %d: %s", rc, log);
    rc = run_cli(log, sizeof log, "edit --model %s --concept a %s %s/o.png", junk, photo, tmpdir);
    ck_assert_msg(rc == 1 && strstr(log, "e2gan edit: "), "junk model gave %d: %s", rc, log);
    rc = run_cli(log, sizeof log, "edit --model %s --adapter %s --concept a %s %s/o.png", model, model,
                 photo, tmpdir);
    ck_assert_msg(rc == 1 && strstr(log, "not an e2gan adapter"), "base as adapter gave %d: %s", rc, log);
    rc = run_cli(log, sizeof log, "info %s/missing.safetensors", tmpdir);
    ck_assert_msg(rc == 1 && strstr(log, "e2gan info: "), "missing file gave %d: %s", rc, log);
    ck_assert_int_eq(run_cli(log, sizeof log, "init --ngf 0 --concepts a --out %s", model), 2);
    ck_assert_int_eq(run_cli(log, sizeof log, "frobnicate"), 2);
    ck_assert_msg(access(tmpdir, F_OK) == 0 && access(junk, F_OK) == 0, "inputs were touched");
}
END_TEST

int main(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 300);
    tcase_add_unchecked_fixture(tc, make_tmpdir, remove_tmpdir);
    tcase_add_test(tc, test_edit_matches_pytorch);
    tcase_add_test(tc, test_edit_merged_matches_pytorch);
    tcase_add_test(tc, test_init_info_bench);
    tcase_add_test(tc, test_bad_input);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
