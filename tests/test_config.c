/* test_config.c — the server's option table (server/config.c): defaults,
 * the precedence default < config file < environment < flag, the config
 * file's syntax, bounds and validators with messages that name where the
 * bad value came from, --help listing every option, and --check-config's
 * output read back as a config file. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "testutil.h"

static char tmpdir[64];

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/e2g_config_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Writes text to a file in tmpdir and returns its path (static buffer). */
static const char *write_file(const char *name, const char *text) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads with argv (NULL-terminated, without the program name) and env
 * (NULL-terminated); returns the action or -1 with err filled. */
static int load(e2g_server_config *cfg, char *err, const char *const *args, const char *const *env) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "e2gan-server";
    for (; args && *args; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    err[0] = '\0';
    return e2g_config_load(cfg, argc, argv, (char **)env, err, 512);
}

START_TEST(test_defaults) {
    e2g_server_config cfg;
    char err[512];
    const char *args[] = {"--model", "m.safetensors", NULL};
    const char *env[] = {NULL};
    ck_assert_msg(load(&cfg, err, args, env) == E2G_CONFIG_RUN, "%s", err);
    ck_assert_str_eq(cfg.model, "m.safetensors");
    ck_assert_str_eq(cfg.adapters, "adapters");
    ck_assert_str_eq(cfg.listen, "127.0.0.1:8080");
    ck_assert_str_eq(cfg.static_dir, "static");
    ck_assert_str_eq(cfg.openapi, "openapi.yaml");
    ck_assert_str_eq(cfg.admin_token, "");
    ck_assert_str_eq(cfg.cors_origins, "");
    ck_assert_int_eq(cfg.max_body, 32LL << 20);
    ck_assert_int_eq(cfg.max_pixels, 4194304);
    ck_assert_int_eq(cfg.max_batch, 8);
    ck_assert_int_eq(cfg.adapter_cache, 256LL << 20);
    ck_assert_int_eq(cfg.jpeg_quality, 90);
    ck_assert_int_eq(cfg.log_level, E2G_LOG_INFO);
    ck_assert_int_eq(cfg.finetune, 1);
    ck_assert_int_eq(cfg.adapter_rescan_s, 0);
    e2g_config_free(&cfg);
    ck_assert_ptr_null(cfg.model);
    /* a replica that leaves the jobs to its designated worker */
    const char *replica_env[] = {"E2GAN_FINETUNE=off", "E2GAN_ADAPTER_RESCAN_S=5", NULL};
    ck_assert_msg(load(&cfg, err, args, replica_env) == E2G_CONFIG_RUN, "%s", err);
    ck_assert_int_eq(cfg.finetune, 0);
    ck_assert_int_eq(cfg.adapter_rescan_s, 5);
    e2g_config_free(&cfg);
    const char *bad_env[] = {"E2GAN_FINETUNE=no", NULL};
    ck_assert_int_eq(load(&cfg, err, args, bad_env), -1);
    ck_assert_msg(strstr(err, "E2GAN_FINETUNE") && strstr(err, "off, on"), "%s", err);
    e2g_config_free(&cfg);
}
END_TEST

START_TEST(test_precedence) {
    e2g_server_config cfg;
    char err[512], env_config[256];
    const char *file = write_file("a.conf",
                                  "# a comment\n"
                                  "\n"
                                  "model = from-file.safetensors\n"
                                  "  max_batch=2  \n"
                                  "max-body = 4M\n"
                                  "cors_origins = \" https://a.example \"\n"
                                  "log_level = debug\n");
    /* File only. */
    const char *args_file[] = {"--config", file, NULL};
    const char *no_env[] = {NULL};
    ck_assert_msg(load(&cfg, err, args_file, no_env) == 0, "%s", err);
    ck_assert_str_eq(cfg.model, "from-file.safetensors");
    ck_assert_int_eq(cfg.max_batch, 2);
    ck_assert_int_eq(cfg.max_body, 4LL << 20);
    ck_assert_int_eq(cfg.log_level, E2G_LOG_DEBUG);
    ck_assert_str_eq(cfg.cors_origins, " https://a.example "); /* quotes keep the spaces */
    e2g_config_free(&cfg);

    e2g_server_config c2;
    const char *file2 = write_file("b.conf", "model = m\nmax_batch = 2\n");
    snprintf(env_config, sizeof env_config, "E2GAN_CONFIG=%s", file2);
    /* Environment beats the file; the file comes from E2GAN_CONFIG. */
    const char *env[] = {"HOME=/root", env_config, "E2GAN_MAX_BATCH=3", "E2GAN_LISTEN=[::1]:9000", NULL};
    ck_assert_msg(load(&c2, err, NULL, env) == 0, "%s", err);
    ck_assert_int_eq(c2.max_batch, 3);
    ck_assert_str_eq(c2.listen, "[::1]:9000");
    ck_assert_str_eq(c2.model, "m");
    e2g_config_free(&c2);

    /* A flag beats both, in either spelling. */
    const char *args_flag[] = {"--max-batch", "4", "--max_body=1G", NULL};
    ck_assert_msg(load(&c2, err, args_flag, env) == 0, "%s", err);
    ck_assert_int_eq(c2.max_batch, 4);
    ck_assert_int_eq(c2.max_body, 1LL << 30);
    e2g_config_free(&c2);

    /* --config beats E2GAN_CONFIG. */
    const char *args_both[] = {"--config", write_file("c.conf", "model = c-model\n"), NULL};
    ck_assert_msg(load(&c2, err, args_both, env) == 0, "%s", err);
    ck_assert_str_eq(c2.model, "c-model");
    ck_assert_int_eq(c2.max_batch, 3);
    e2g_config_free(&c2);
}
END_TEST

/* Each case: args, env, file text (or NULL), and words the message must
 * hold (where it came from and what is wrong). */
START_TEST(test_errors) {
    static const struct {
        const char *args[6];
        const char *env[3];
        const char *file;
        const char *want1, *want2;
    } cases[] = {
        {{NULL}, {NULL}, NULL, "model is required", "E2GAN_MODEL"},
        {{"--model", "m", "--bogus", "1"}, {NULL}, NULL, "unknown flag --bogus", NULL},
        {{"--model"}, {NULL}, NULL, "needs a value", NULL},
        {{"stray"}, {NULL}, NULL, "unexpected argument", NULL},
        {{"--model", "m", "--max-batch", "65"}, {NULL}, NULL, "--max-batch", "65 is outside 1..64"},
        {{"--model", "m", "--max-batch", "0"}, {NULL}, NULL, "0 is outside 1..64", NULL},
        {{"--model", "m", "--max-batch", "8x"}, {NULL}, NULL, "not an integer", NULL},
        {{"--model", "m", "--max-batch", " 8"}, {NULL}, NULL, "not an integer", NULL},
        {{"--model", "m", "--max-body", "2T"}, {NULL}, NULL, "not a size", NULL},
        {{"--model", "m", "--max-body", "2G"}, {NULL}, NULL, "outside 1K..1G", NULL},
        {{"--model", "m", "--max-body", "99999999999999999999"}, {NULL}, NULL, "not a size", NULL},
        {{"--model", "m", "--max-body", "9999999999999G"}, {NULL}, NULL, "not a size", NULL},
        {{"--model", "m", "--log-level", "loud"}, {NULL}, NULL, "not one of debug, info", NULL},
        {{"--model", "m", "--listen", "8080"}, {NULL}, NULL, "HOST:PORT", NULL},
        {{"--model", "m", "--listen", "::1:8080"}, {NULL}, NULL, "HOST:PORT", NULL},
        {{"--model", "m", "--listen", "h:65536"}, {NULL}, NULL, "HOST:PORT", NULL},
        {{"--model", "m", "--admin-token", "short"}, {NULL}, NULL, "at least 16", NULL},
        {{"--model", "m", "--admin-token", "has spaces in the token"}, {NULL}, NULL, "may only hold", NULL},
        {{"--model", "m", "--cors-origins", "example.com"}, {NULL}, NULL, "not an origin", NULL},
        {{"--model", "m", "--cors-origins", "https://a.example/path"}, {NULL}, NULL, "not an origin", NULL},
        {{"--model", "m", "--cors-origins", "*,https://a.example"}, {NULL}, NULL, "not an origin", NULL},
        {{"--model", ""}, {NULL}, NULL, "must not be empty", NULL},
        {{"--model", "m", "--precision", "fp16"}, {NULL}, NULL, "not auto, fp32 or bf16", NULL},
        {{NULL}, {"E2GAN_MODEL=m", "E2GAN_PRECISION=half"}, NULL, "E2GAN_PRECISION", "not auto, fp32 or bf16"},
        {{NULL}, {"E2GAN_MODEL=m", "E2GAN_QUEUE_CAPACITY=-1"}, NULL, "E2GAN_QUEUE_CAPACITY", "outside 1..4096"},
        {{NULL}, {"E2GAN_MODEL=m"}, "max_batch = 1\nmax_batch = 2\n", ":2:", "set twice"},
        {{NULL}, {"E2GAN_MODEL=m"}, "# c\nnonsense = 1\n", ":2: unknown key 'nonsense'", NULL},
        {{NULL}, {"E2GAN_MODEL=m"}, "just words\n", ":1: expected 'key = value'", NULL},
        {{NULL}, {"E2GAN_MODEL=m"}, "model = \"open\n", ":1: unterminated", NULL},
        {{NULL}, {"E2GAN_MODEL=m"}, "\nthreads = 2000\n", ":2: threads", "outside 0..1024"},
        /* quotes keep the spaces, which a token may not hold */
        {{NULL}, {"E2GAN_MODEL=m"}, "admin_token = \"  spaces-kept-in-quotes-123 \"\n", ":1: admin_token", "a token"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        e2g_server_config cfg;
        char err[512];
        const char *args[10];
        int k = 0;
        if (cases[i].file) {
            args[k++] = "--config";
            args[k++] = write_file("case.conf", cases[i].file);
        }
        for (int j = 0; cases[i].args[j]; j++) args[k++] = cases[i].args[j];
        args[k] = NULL;
        int rc = load(&cfg, err, args, cases[i].env);
        ck_assert_msg(rc == -1, "case %zu: accepted", i);
        ck_assert_msg(strstr(err, cases[i].want1), "case %zu: '%s' lacks '%s'", i, err, cases[i].want1);
        if (cases[i].want2)
            ck_assert_msg(strstr(err, cases[i].want2), "case %zu: '%s' lacks '%s'", i, err, cases[i].want2);
        e2g_config_free(&cfg);
    }
}
END_TEST

START_TEST(test_accepted_values) {
    e2g_server_config cfg;
    char err[512];
    const char *args[] = {"--model", "m", "--listen", "[::]:0", "--cors-origins",
                          " https://a.example:8443 , http://localhost:3000", "--admin-token",
                          "abcDEF0123456789-._~+/==", "--max-body", "512KiB", NULL};
    const char *env[] = {"E2GAN_UNKNOWN_THING=1", NULL}; /* a warning, not an error */
    ck_assert_msg(load(&cfg, err, args, env) == 0, "%s", err);
    ck_assert_int_eq(cfg.max_body, 512 * 1024);
    ck_assert_int_eq(e2g_config_set(&cfg, "max-pixels", "64", err, sizeof err), 0);
    ck_assert_int_eq(cfg.max_pixels, 64);
    ck_assert_int_eq(e2g_config_set(&cfg, "max_pixels", "63", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "max_pixels"));
    ck_assert_int_eq(e2g_config_set(&cfg, "nope", "1", err, sizeof err), -1);
    e2g_config_free(&cfg);

    char host[64];
    int port;
    ck_assert_int_eq(e2g_config_split_listen("[::1]:8080", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_int_eq(port, 8080);
    ck_assert_int_eq(e2g_config_split_listen("0.0.0.0:0", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "0.0.0.0");
    ck_assert_int_eq(port, 0);
    ck_assert_int_eq(e2g_config_split_listen(":80", host, sizeof host, &port), -1);
    ck_assert_int_eq(e2g_config_split_listen("[::1]8080", host, sizeof host, &port), -1);
    ck_assert_int_eq(e2g_config_split_listen("h:", host, sizeof host, &port), -1);
    ck_assert_int_eq(e2g_config_split_listen("h:-1", host, sizeof host, &port), -1);
}
END_TEST

/* --help lists every field of the table: each option printed by
 * --check-config appears in the help with its flag and variable. */
START_TEST(test_help_and_check_config) {
    e2g_server_config cfg;
    char err[512];
    const char *help_args[] = {"--help", "--bogus-is-not-looked-at-after-help", NULL};
    const char *no_env[] = {NULL};
    /* --help wins even when the rest would fail. */
    ck_assert_int_eq(load(&cfg, err, help_args, no_env), E2G_CONFIG_HELP);
    e2g_config_free(&cfg);
    char *help = NULL;
    size_t help_len = 0;
    FILE *f = open_memstream(&help, &help_len);
    e2g_config_help(f, "e2gan-server");
    fclose(f);
    ck_assert_ptr_nonnull(strstr(help, "--max-batch N  E2GAN_MAX_BATCH  default 8, 1..64"));
    ck_assert_ptr_nonnull(strstr(help, "--max-body BYTES  E2GAN_MAX_BODY  default 32M, 1K..1G"));
    ck_assert_ptr_nonnull(strstr(help, "--model FILE  E2GAN_MODEL  (required)"));
    ck_assert_ptr_nonnull(strstr(help, "--config FILE  E2GAN_CONFIG"));

    const char *args[] = {"--model", "m", "--check-config", "--admin-token", "0123456789abcdef0123",
                          "--max-batch", "5", "--max-body", "3M", NULL};
    ck_assert_int_eq(load(&cfg, err, args, no_env), E2G_CONFIG_CHECK);
    char *printed = NULL;
    size_t printed_len = 0;
    f = open_memstream(&printed, &printed_len);
    e2g_config_print(f, &cfg);
    fclose(f);
    e2g_config_free(&cfg);
    ck_assert_ptr_null(strstr(printed, "0123456789abcdef0123")); /* the secret stays hidden */
    ck_assert_ptr_nonnull(strstr(printed, "# admin_token is set (hidden)"));
    int lines = 0;
    for (char *line = strtok(printed, "\n"); line; line = strtok(NULL, "\n")) {
        char key[64], flag[80], var[80];
        if (sscanf(line, "%63[a-z_] =", key) != 1) {
            ck_assert_ptr_nonnull(strstr(line, "admin_token"));
            strcpy(key, "admin_token");
        }
        snprintf(flag, sizeof flag, "--");
        for (size_t i = 0; key[i]; i++) {
            char c[2] = {key[i] == '_' ? '-' : key[i], '\0'};
            strcat(flag, c);
        }
        snprintf(var, sizeof var, "E2GAN_");
        for (size_t i = 0; key[i]; i++) {
            char c[2] = {(char)(key[i] >= 'a' && key[i] <= 'z' ? key[i] - 32 : key[i]), '\0'};
            strcat(var, c);
        }
        strcat(flag, " ");
        ck_assert_msg(strstr(help, flag), "--help lacks %s", flag);
        ck_assert_msg(strstr(help, var), "--help lacks %s", var);
        lines++;
    }
    ck_assert_int_ge(lines, 20);
    free(help);
    free(printed);
}
END_TEST

/* --check-config's output, read back as a config file, gives the same
 * settings. */
START_TEST(test_print_roundtrip) {
    e2g_server_config a, b;
    char err[512];
    const char *args[] = {"--model", "some model.safetensors", "--max-batch", "3", "--adapter-cache",
                          "3G", "--log-level", "warn", "--cors-origins", "*", NULL};
    const char *no_env[] = {NULL};
    ck_assert_msg(load(&a, err, args, no_env) == 0, "%s", err);
    char path[128];
    snprintf(path, sizeof path, "%s/printed.conf", tmpdir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    e2g_config_print(f, &a);
    fclose(f);
    const char *args_b[] = {"--config", path, NULL};
    ck_assert_msg(load(&b, err, args_b, no_env) == 0, "%s", err);
    ck_assert_str_eq(a.model, b.model);
    ck_assert_str_eq(a.cors_origins, b.cors_origins);
    ck_assert_int_eq(a.max_batch, b.max_batch);
    ck_assert_int_eq(a.adapter_cache, b.adapter_cache);
    ck_assert_int_eq(b.adapter_cache, 3LL << 30);
    ck_assert_int_eq(a.log_level, b.log_level);
    ck_assert_int_eq(a.request_timeout_ms, b.request_timeout_ms);
    e2g_config_free(&a);
    e2g_config_free(&b);
}
END_TEST

int main(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_precedence);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_accepted_values);
    tcase_add_test(tc, test_help_and_check_config);
    tcase_add_test(tc, test_print_roundtrip);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
