/* test_train.c — the trainer end to end through the CLI, on a small dataset
 * that tools/make_dataset.py builds from a real photo: a run killed with
 * SIGKILL and restarted from its checkpoint ends with exactly the weights of
 * an unbroken run; runs are deterministic for a seed; training improves the
 * validation PSNR, and its evaluations carry consistent baselines and
 * verdicts; fine-tuning writes an adapter the engine loads and edits
 * with; the sketch loss terms (--edge-weight, --dark-weight) run, are
 * reported and leave a weight-0 run bit-identical to plain L1; concept
 * weights draw a concept's pairs K times as often; bad options
 * and data are refused with a message; without a GPU,
 * --device auto trains on the CPU exactly as --device cpu and --device cuda
 * is refused. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "common.h"
#include "dataset.h"
#include "safetensors.h"
#include "testutil.h"
#include "train.h"

static char dir[256];

/* Runs a shell command built from fmt; returns its exit status. */
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A dataset of two concepts (a built-in teacher and a custom one) at 32²
 * from five crops of the test photo, made once for the suite. */
static void make_dataset(void) {
    snprintf(dir, sizeof dir, "/tmp/e2g_train_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(sh("mkdir -p %s/photos && for i in 1 2 3 4 5 6; do convert %s/tests/data/chelsea.png "
                        "-roll +${i}9+${i}3 %s/photos/p$i.png; done",
                        dir, test_source(), dir),
                     0);
    ck_assert_int_eq(sh("/usr/bin/python3 %s/tools/make_dataset.py --photos %s/photos --photos-from none "
                        "--out %s/ds --crop 32 --train-crops 48 --val-crops-per-photo 2 --concepts sepia "
                        "--teacher negate=-negate --jobs 2 >%s/dataset.log 2>&1",
                        test_source(), dir, dir, dir),
                     0);
}

static void remove_dataset(void) {
    if (sh("rm -rf %s", dir) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

#define TRAIN_ARGS "--data %s/ds --ngf 8 --ndf 8 --batch 4 --threads 2 --quiet --eval-pairs 8"

/* The generator's tensors of two model files are bit-identical. */
static int same_weights(const char *a, const char *b) {
    char err[E2G_ERR_LEN];
    e2g_st_file *fa = NULL, *fb = NULL;
    ck_assert_msg(e2g_st_open(&fa, a, err) == 0, "%s", err);
    ck_assert_msg(e2g_st_open(&fb, b, err) == 0, "%s", err);
    int same = e2g_st_count(fa) == e2g_st_count(fb);
    for (int i = 0; same && i < e2g_st_count(fa); i++) {
        const e2g_st_tensor *ta = e2g_st_at(fa, i), *tb = e2g_st_find(fb, ta->name);
        same = tb && ta->nbytes == tb->nbytes && memcmp(ta->data, tb->data, ta->nbytes) == 0;
    }
    e2g_st_close(fa), e2g_st_close(fb);
    return same;
}

/* A run killed with SIGKILL after its first checkpoint, then restarted,
 * ends with the weights of a run that was never interrupted: in fp32 and
 * in bf16 (loop index 0, 1). */
START_TEST(test_kill_and_resume) {
    const char *prec = _i ? "bf16" : "fp32";
    ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --precision %s --steps 120 --checkpoint-every 5 "
                        "--checkpoint %s/a%s.ckpt --out %s/a%s.safetensors 2>%s/a.log",
                        test_bin(), dir, prec, dir, prec, dir, prec, dir),
                     0);
    char ckpt[300], cmd[2048];
    snprintf(ckpt, sizeof ckpt, "%s/b%s.ckpt", dir, prec);
    snprintf(cmd, sizeof cmd,
             "exec %s train " TRAIN_ARGS " --precision %s --steps 120 --checkpoint-every 5 --checkpoint %s "
             "--out %s/b%s.safetensors 2>%s/b1.log",
             test_bin(), dir, prec, ckpt, dir, prec, dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    while (access(ckpt, F_OK) != 0) usleep(500);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFSIGNALED(status), "the run finished before it could be killed");
    /* the checkpoint left behind is whole and mid-run */
    char err[E2G_ERR_LEN];
    e2g_st_file *f = NULL;
    ck_assert_msg(e2g_st_open(&f, ckpt, err) == 0, "checkpoint after kill: %s", err);
    long step = atol(e2g_st_meta(f, "step"));
    e2g_st_close(f);
    ck_assert_msg(step > 0 && step < 120, "checkpoint at step %ld", step);
    ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --precision %s --steps 120 --checkpoint-every 5 --checkpoint %s "
                        "--out %s/b%s.safetensors 2>%s/b2.log",
                        test_bin(), dir, prec, ckpt, dir, prec, dir),
                     0);
    ck_assert_int_eq(sh("grep -q 'resuming at step' %s/b2.log", dir), 0);
    ck_assert_msg(same_weights(ckpt, ckpt), "a file must equal itself");
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/a%s.safetensors", dir, prec);
    snprintf(b, sizeof b, "%s/b%s.safetensors", dir, prec);
    ck_assert_msg(same_weights(a, b), "%s: resumed run (killed at step %ld) differs from the unbroken one", prec,
                  step);
}
END_TEST

/* Same seed, same weights; another seed, other weights. */
START_TEST(test_deterministic) {
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --steps 8 --seed %d --out %s/d%d.safetensors 2>/dev/null",
                            test_bin(), dir, i < 2 ? 5 : 6, dir, i),
                         0);
    char p[3][300];
    for (int i = 0; i < 3; i++) snprintf(p[i], sizeof p[i], "%s/d%d.safetensors", dir, i);
    ck_assert_msg(same_weights(p[0], p[1]), "two runs with one seed differ");
    ck_assert_msg(!same_weights(p[0], p[2]), "two seeds gave the same weights");
}
END_TEST

static json_t *load_report(const char *name) {
    char path[512];
    json_error_t jerr;
    snprintf(path, sizeof path, "%s/%s/report.json", dir, name);
    json_t *r = json_load_file(path, 0, &jerr);
    ck_assert_msg(r != NULL, "%s: %s", path, jerr.text);
    return r;
}

/* An evaluation's baselines and verdict are consistent (train.h): per
 * concept the constant image has no edges (F1 0), F1s lie in [0, 1], and
 * `learned` is exactly the verdict's rule on the reported means. */
static void check_quality(json_t *ev) {
    json_t *per = json_object_get(ev, "concepts"), *c;
    const char *name;
    int learned = 0;
    ck_assert_int_ge(json_object_size(per), 1);
    json_object_foreach(per, name, c) {
        double psnr = json_number_value(json_object_get(c, "psnr"));
        double ident = json_number_value(json_object_get(c, "identity_psnr"));
        double constant = json_number_value(json_object_get(c, "constant_psnr"));
        ck_assert_msg(json_is_number(json_object_get(c, "constant_psnr")) && constant > 0, "%s: constant_psnr", name);
        ck_assert(json_is_number(json_object_get(c, "identity_ssim")));
        ck_assert(json_is_number(json_object_get(c, "constant_ssim")));
        double paper = json_number_value(json_object_get(c, "teacher_paper"));
        ck_assert(paper >= 0 && paper <= 1);
        int sketch = json_is_true(json_object_get(c, "sketch"));
        ck_assert_int_eq(sketch, paper >= E2G_SKETCH_PAPER);
        json_t *f1 = json_object_get(c, "edge_f1");
        if (json_integer_value(json_object_get(c, "edge_pairs")) > 0) {
            ck_assert(json_number_value(f1) >= 0 && json_number_value(f1) <= 1);
            ck_assert(json_number_value(json_object_get(c, "identity_edge_f1")) >= 0);
            ck_assert_double_eq(json_number_value(json_object_get(c, "constant_edge_f1")), 0.0);
        } else {
            ck_assert(json_is_null(f1));
        }
        int want = psnr - ident >= E2G_LEARNED_MARGIN_DB && psnr - constant >= E2G_LEARNED_MARGIN_DB &&
                   (!sketch || (json_is_number(f1) && json_number_value(f1) >= E2G_SKETCH_EDGE_F1));
        ck_assert_msg(json_is_boolean(json_object_get(c, "learned")), "%s: learned", name);
        ck_assert_int_eq(json_is_true(json_object_get(c, "learned")), want);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(c, "verdict")));
        learned += want;
    }
    ck_assert_int_eq(json_integer_value(json_object_get(ev, "learned")), learned);
    ck_assert(json_is_number(json_object_get(ev, "mean_constant_psnr")));
}

/* Training moves the validation PSNR up from the untrained model's, and the
 * report holds its pieces: history, budget, curve and contact sheet. */
START_TEST(test_training_improves) {
    ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --steps 150 --eval-every 1 --gan-weight 0 --lr 1e-3 "
                        "--report %s/rep --out %s/t.safetensors 2>/dev/null",
                        test_bin(), dir, dir, dir),
                     0);
    json_t *r = load_report("rep");
    json_t *evals = json_object_get(json_object_get(r, "history"), "evals");
    ck_assert_int_ge(json_array_size(evals), 2);
    double first = json_number_value(json_object_get(json_array_get(evals, 0), "mean_psnr"));
    double last = json_number_value(json_object_get(json_object_get(r, "final"), "mean_psnr"));
    fprintf(stderr, "validation PSNR after 1 step %.2f dB, after 150 steps %.2f dB\n", first, last);
    ck_assert_msg(last > first + 1.0, "PSNR went from %.2f to %.2f dB", first, last);
    json_t *budget = json_object_get(r, "budget");
    ck_assert_int_eq(json_integer_value(json_object_get(budget, "samples")), 600);
    ck_assert(json_number_value(json_object_get(budget, "wall_s")) > 0);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(budget, "machine")));
    check_quality(json_object_get(r, "final"));
    json_decref(r);
    ck_assert_int_eq(sh("test -s %s/rep/curve.png && test -s %s/rep/contact.png", dir, dir), 0);
    /* the model file carries the report */
    ck_assert_int_eq(sh("%s info %s/t.safetensors | grep -q 'training_report: {'", test_bin(), dir), 0);
    /* `evaluate` on the saved model measures what training's last evaluation did */
    ck_assert_int_eq(sh("%s evaluate --model %s/t.safetensors --data %s/ds --pairs 8 --threads 2 --precision fp32 --report %s/ev "
                        ">/dev/null",
                        test_bin(), dir, dir, dir),
                     0);
    char path[512];
    json_error_t jerr;
    snprintf(path, sizeof path, "%s/ev/evaluation.json", dir);
    json_t *ev = json_load_file(path, 0, &jerr);
    ck_assert_msg(ev != NULL, "%s", jerr.text);
    ck_assert_double_eq_tol(json_number_value(json_object_get(ev, "mean_psnr")), last, 1e-6);
    ck_assert_str_eq(json_string_value(json_object_get(ev, "precision")), "fp32");
    check_quality(ev);
    json_decref(ev);
    ck_assert_int_eq(sh("test -s %s/ev/contact.png", dir), 0);
}
END_TEST

/* Mixed precision: fine-tuning the shipped base to a new concept in bf16
 * and in fp32 (same seed, L1, 100 steps) follows the same loss curve (each
 * logged L1 within 5%) and ends within 0.2 dB of validation PSNR; the bf16
 * adapter differs from the fp32 one (its path ran).  A fine-tuning run, not
 * training from scratch: from a random init, two fp32 runs of different
 * seeds already end up to 2 dB apart at this size, so bf16's rounding
 * (like any perturbation) moves such a run by as much (docs/engine.md). */
START_TEST(test_bf16_training_matches_fp32) {
    const char *prec[2] = {"fp32", "bf16"};
    json_t *r[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(sh("%s finetune --model %s/models/e2gan-s.safetensors --data %s/ds --concept negate "
                            "--batch 4 --threads 2 --quiet --eval-pairs 0 --precision %s --steps 100 "
                            "--eval-every 50 --gan-weight 0 --report %s/mp_%s --out %s/mp_%s.safetensors 2>/dev/null",
                            test_bin(), test_source(), dir, prec[i], dir, prec[i], dir, prec[i]),
                         0);
        char name[32];
        snprintf(name, sizeof name, "mp_%s", prec[i]);
        r[i] = load_report(name);
    }
    json_t *log[2] = {json_object_get(json_object_get(r[0], "history"), "log"),
                      json_object_get(json_object_get(r[1], "history"), "log")};
    ck_assert_int_ge(json_array_size(log[0]), 3);
    ck_assert_int_eq(json_array_size(log[0]), json_array_size(log[1]));
    double worst = 0;
    for (size_t k = 0; k < json_array_size(log[0]); k++) {
        double a = json_number_value(json_array_get(json_array_get(log[0], k), 1));
        double b = json_number_value(json_array_get(json_array_get(log[1], k), 1));
        double rel = fabs(b - a) / a;
        worst = rel > worst ? rel : worst;
    }
    double psnr[2], wall[2];
    for (int i = 0; i < 2; i++) {
        psnr[i] = json_number_value(json_object_get(json_object_get(r[i], "final"), "mean_psnr"));
        wall[i] = json_number_value(json_object_get(json_object_get(r[i], "budget"), "wall_s"));
    }
    fprintf(stderr, "bf16 vs fp32 fine-tuning: final PSNR %.3f vs %.3f dB, worst L1 difference %.2f%%, wall %.1f vs %.1f s\n",
            psnr[1], psnr[0], 100 * worst, wall[1], wall[0]);
    ck_assert_msg(worst <= 0.05, "the bf16 loss curve left the fp32 one by %.1f%%", 100 * worst);
    ck_assert_msg(fabs(psnr[1] - psnr[0]) <= 0.2, "final PSNR bf16 %.3f vs fp32 %.3f dB", psnr[1], psnr[0]);
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/mp_fp32.safetensors", dir);
    snprintf(b, sizeof b, "%s/mp_bf16.safetensors", dir);
    ck_assert_msg(!same_weights(a, b), "bf16 fine-tuning gave the fp32 adapter: its path did not run");
    json_decref(r[0]), json_decref(r[1]);
}
END_TEST

/* A LoRA adapter for a concept the base never saw: written with PEFT keys
 * and its report, loaded back by `edit`, and better than the base's edit. */
START_TEST(test_finetune) {
    ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --concepts sepia --steps 40 --gan-weight 0 "
                        "--out %s/base.safetensors 2>/dev/null",
                        test_bin(), dir, dir),
                     0);
    ck_assert_int_eq(sh("%s finetune --model %s/base.safetensors --concept negate --rank 2 "
                        "--data %s/ds --batch 4 --threads 2 --quiet --steps 60 --lr 2e-3 "
                        "--eval-every 1 --eval-pairs 8 --report %s/ft --out %s/negate.safetensors 2>/dev/null",
                        test_bin(), dir, dir, dir, dir),
                     0);
    json_t *r = load_report("ft");
    json_t *evals = json_object_get(json_object_get(r, "history"), "evals");
    double first = json_number_value(json_object_get(json_array_get(evals, 0), "mean_psnr"));
    double last = json_number_value(json_object_get(json_object_get(r, "final"), "mean_psnr"));
    fprintf(stderr, "fine-tuning: validation PSNR %.2f -> %.2f dB\n", first, last);
    ck_assert_msg(last > first + 1.0, "fine-tuning PSNR went from %.2f to %.2f dB", first, last);
    json_decref(r);
    ck_assert_int_eq(sh("%s info %s/negate.safetensors | grep -q 'base_model.model.tb.fc2.lora_B.weight'",
                        test_bin(), dir),
                     0);
    ck_assert_int_eq(sh("%s edit --model %s/base.safetensors --adapter %s/negate.safetensors "
                        "--concept negate %s/tests/data/chelsea.png %s/edited.png >/dev/null",
                        test_bin(), dir, dir, test_source(), dir),
                     0);
}
END_TEST

/* Rank search and data reduction: the report shows every measurement, the
 * chosen ranks stay within the probe's, half the pairs are kept, and the
 * adapter (layers at rank 0 left out) loads and edits. */
START_TEST(test_rank_search_and_reduction) {
    ck_assert_int_eq(sh("%s init --ngf 8 --concepts sepia --seed 2 --out %s/rs_base.safetensors >/dev/null",
                        test_bin(), dir),
                     0);
    ck_assert_int_eq(sh("%s finetune --model %s/rs_base.safetensors --data %s/ds --concept negate "
                        "--rank-search --max-rank 4 --probe 0.5 --keep-fraction 0.5 --steps 40 --batch 4 "
                        "--lr 2e-3 --gan-weight 0 --threads 2 --quiet --eval-pairs 8 --report %s/rs "
                        "--out %s/rs.safetensors 2>/dev/null",
                        test_bin(), dir, dir, dir, dir),
                     0);
    json_t *r = load_report("rs");
    json_t *search = json_object_get(r, "rank_search"), *layers = json_object_get(search, "layers");
    ck_assert_int_eq(json_object_size(layers), 18);
    const char *name;
    json_t *layer;
    long chosen = 0;
    json_object_foreach(layers, name, layer) {
        int rank = (int)json_integer_value(json_object_get(layer, "rank"));
        ck_assert_msg(rank >= 0 && rank <= 4, "%s: rank %d", name, rank);
        ck_assert_int_eq(rank, json_integer_value(json_object_get(json_object_get(r, "ranks"), name)));
        ck_assert_msg(json_object_size(json_object_get(layer, "psnr_by_rank")) >= 1, "%s: no measurement", name);
        chosen += rank;
    }
    ck_assert(json_integer_value(json_object_get(search, "chosen_lora_params")) <=
              json_integer_value(json_object_get(search, "probe_lora_params")));
    /* the chosen ranks together keep the probe's quality within the
     * tolerance (the joint repair), unless every layer went back to 4 */
    double probe = json_number_value(json_object_get(search, "probe_psnr"));
    double joint = json_number_value(json_object_get(search, "truncated_psnr"));
    double tol = json_number_value(json_object_get(search, "tolerance_db"));
    ck_assert(json_is_array(json_object_get(search, "joint_repairs")));
    ck_assert_msg(probe - joint <= tol + 1e-9 || chosen == 4 * 18, "joint truncation %.3f dB vs probe %.3f dB",
                  joint, probe);
    json_t *red = json_object_get(r, "data_reduction");
    int pairs = (int)json_integer_value(json_object_get(red, "pairs"));
    ck_assert_int_eq(json_integer_value(json_object_get(red, "kept")), (pairs + 1) / 2);
    json_decref(r);
    fprintf(stderr, "rank search: sum of chosen ranks %ld over 18 layers\n", chosen);
    ck_assert_int_eq(sh("%s edit --model %s/rs_base.safetensors --adapter %s/rs.safetensors "
                        "--concept negate %s/tests/data/chelsea.png %s/rs.png >/dev/null",
                        test_bin(), dir, dir, test_source(), dir),
                     0);
}
END_TEST

/* The log rows of a report's history (train.h: [step, l1, gan, d, edge, dark_l1]). */
static json_t *history_log(json_t *report) { return json_object_get(json_object_get(report, "history"), "log"); }

/* The sketch loss terms (--edge-weight, --dark-weight): at weight 0 a run
 * is the plain L1 run bit for bit (weights and logged losses); on, the
 * report records the weights, the history and the events carry both
 * terms' losses, the weights differ from the plain run's, and fine-tuning
 * takes them too and shows them on the progress line.  They keep a run off
 * the GPU: --device cuda is refused (with a GPU: naming the edge term). */
START_TEST(test_sketch_loss_terms) {
    const char *runs[][2] = {{"lt_plain", ""},
                             {"lt_zero", "--edge-weight 0 --dark-weight 0"},
                             {"lt_on", "--edge-weight 50 --dark-weight 4 --events"}};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --concepts sepia --steps 20 --gan-weight 0 "
                            "--seed 3 %s --report %s/%s --out %s/%s.safetensors >%s/%s.events 2>/dev/null",
                            test_bin(), dir, runs[i][1], dir, runs[i][0], dir, runs[i][0], dir, runs[i][0]),
                         0);
    json_t *r[3];
    char path[3][300];
    for (int i = 0; i < 3; i++) {
        r[i] = load_report(runs[i][0]);
        snprintf(path[i], sizeof path[i], "%s/%s.safetensors", dir, runs[i][0]);
    }
    ck_assert_msg(same_weights(path[0], path[1]), "--dark-weight 0 --edge-weight 0 changed the weights");
    ck_assert_msg(json_equal(history_log(r[0]), history_log(r[1])), "weight 0 changed the logged losses");
    ck_assert_msg(!same_weights(path[0], path[2]), "the loss terms did not change the training");
    json_t *opts[3] = {json_object_get(r[0], "options"), json_object_get(r[1], "options"),
                       json_object_get(r[2], "options")};
    ck_assert_double_eq(json_number_value(json_object_get(opts[0], "edge_weight")), 0);
    ck_assert_double_eq(json_number_value(json_object_get(opts[0], "dark_weight")), 0);
    ck_assert_double_eq(json_number_value(json_object_get(opts[2], "edge_weight")), 50);
    ck_assert_double_eq(json_number_value(json_object_get(opts[2], "dark_weight")), 4);
    json_t *log[2] = {history_log(r[0]), history_log(r[2])}; /* steps 10 and 20 */
    ck_assert_int_eq(json_array_size(log[0]), 2);
    ck_assert_int_eq(json_array_size(log[1]), 2);
    for (size_t k = 0; k < 2; k++) {
        json_t *plain = json_array_get(log[0], k), *on = json_array_get(log[1], k);
        ck_assert_int_eq(json_array_size(plain), 6);
        ck_assert_double_eq(json_number_value(json_array_get(plain, 4)), 0);
        ck_assert_double_eq(json_number_value(json_array_get(plain, 5)), 0);
        ck_assert_msg(json_number_value(json_array_get(on, 4)) > 0 && json_number_value(json_array_get(on, 5)) > 0,
                      "log row %zu: no edge / dark-L1 loss", k);
    }
    for (int i = 0; i < 3; i++) json_decref(r[i]);
    ck_assert_int_eq(sh("grep -c '\"event\":\"step\".*\"edge\":.*\"dark_l1\":' %s/lt_on.events | grep -qx 2", dir),
                     0);
    ck_assert_int_eq(sh("grep -q '\"edge\"' %s/lt_plain.events", dir), 1);

    ck_assert_int_eq(sh("%s init --ngf 8 --concepts sepia --seed 2 --out %s/lt_base.safetensors >/dev/null",
                        test_bin(), dir),
                     0);
    ck_assert_int_eq(sh("%s finetune --model %s/lt_base.safetensors --data %s/ds --concept negate --rank 2 "
                        "--batch 4 --threads 2 --eval-pairs 8 --steps 4 --gan-weight 0 --edge-weight 50 "
                        "--dark-weight 4 --report %s/lt_ft --out %s/lt_ft.safetensors 2>%s/lt_ft.log",
                        test_bin(), dir, dir, dir, dir, dir),
                     0);
    ck_assert_int_eq(sh("grep -q 'step 4/4 | L1 [0-9.]*  G 0.0000  D 0.0000  dark-L1 [0-9.]*  edge [0-9.]* |' "
                        "%s/lt_ft.log",
                        dir),
                     0);
    json_t *ft = load_report("lt_ft");
    ck_assert_double_eq(json_number_value(json_object_get(json_object_get(ft, "options"), "edge_weight")), 50);
    json_decref(ft);

    char msg[E2G_ERR_LEN];
    const e2g_backend *cuda = e2g_backend_find("cuda");
    int gpu = cuda && cuda->available(msg) == 1;
    ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --concepts sepia --steps 2 --gan-weight 0 --edge-weight 50 "
                        "--device cuda --out %s/lt_cuda.safetensors 2>%s/lt_cuda.log",
                        test_bin(), dir, dir, dir),
                     1);
    ck_assert_int_eq(sh("grep -q 'cannot train on CUDA' %s/lt_cuda.log", dir), 0);
    if (gpu) ck_assert_int_eq(sh("grep -q 'edge loss term' %s/lt_cuda.log", dir), 0);
}
END_TEST

/* Pairs of concept `name` among the n drawn by batches of one epoch. */
static int drawn(const e2g_dataset *d, const char *name) {
    int *idx = e2g_xmalloc(d->n_pairs * sizeof(int)), count = 0;
    e2g_dataset_batch(d, 7, 0, d->n_pairs, idx);
    for (int i = 0; i < d->n_pairs; i++) count += strcmp(d->concepts[d->pairs[idx[i]].concept], name) == 0;
    free(idx);
    return count;
}

/* --concept-weights negate=3: an epoch draws each negate pair three times
 * and each sepia pair once; bad lists are refused and change nothing. */
START_TEST(test_concept_weights) {
    char path[300], err[E2G_ERR_LEN];
    snprintf(path, sizeof path, "%s/ds", dir);
    e2g_dataset *d = NULL;
    ck_assert_msg(e2g_dataset_load(&d, path, "train", NULL, err) == 0, "%s", err);
    int n = d->n_pairs, sepia = drawn(d, "sepia"), negate = drawn(d, "negate");
    ck_assert_int_eq(sepia + negate, n);
    ck_assert_int_gt(negate, 0);
    const char *bad[] = {"negate=0", "negate=101", "nope=2", "negate", "negate=2x", "negate=", ","};
    for (int i = 0; i < 7; i++) {
        ck_assert_msg(e2g_dataset_weigh(d, bad[i], err) != 0, "'%s' accepted", bad[i]);
        ck_assert_int_eq(d->n_pairs, n);
    }
    ck_assert_msg(e2g_dataset_weigh(d, "negate=3,sepia=1", err) == 0, "%s", err);
    ck_assert_int_eq(d->n_pairs, sepia + 3 * negate);
    ck_assert_int_eq(drawn(d, "sepia"), sepia);
    ck_assert_int_eq(drawn(d, "negate"), 3 * negate);
    e2g_dataset_free(d);
    ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --concept-weights negate=2 --steps 2 --gan-weight 0 --report %s/cw "
                        "--out %s/cw.safetensors 2>%s/cw.log",
                        test_bin(), dir, dir, dir, dir),
                     0);
    ck_assert_int_eq(sh("grep -q 'batches are drawn from %d pairs' %s/cw.log", sepia + 2 * negate, dir), 0);
    ck_assert_int_eq(sh("grep -q '\"concept_weights\": \"negate=2\"' %s/cw/report.json", dir), 0);
}
END_TEST

START_TEST(test_bad_options) {
    const char *cases[] = {
        "train --data %s/ds --out %s/x.safetensors --concepts nope",     /* unknown concept */
        "train --data %s/nothing --out %s/x.safetensors",                /* no dataset */
        "finetune --model %s/missing --data %s/ds --concept negate --out x", /* no base */
        "train --data %s/ds --out %s/x.safetensors --concept-weights nope=2", /* not a trained concept */
    };
    for (int i = 0; i < 4; i++) {
        char args[1024];
        snprintf(args, sizeof args, cases[i], dir, dir);
        ck_assert_int_eq(sh("%s %s --steps 1 --quiet 2>%s/bad.log", test_bin(), args, dir), 1);
        ck_assert_int_eq(sh("grep -q '^e2gan ' %s/bad.log", dir), 0);
    }
    ck_assert_int_eq(sh("%s train --data %s/ds --out x --steps 0 2>/dev/null", test_bin(), dir), 2);
}
END_TEST

/* The device choice of training.  Without a GPU (CI): --device auto gives
 * the weights of --device cpu bit for bit (full G and LoRA) and --device
 * cuda is refused with a message.  With one, --device cuda must train. */
START_TEST(test_device_fallback) {
    char msg[E2G_ERR_LEN];
    const e2g_backend *cuda = e2g_backend_find("cuda"); /* NULL: not built */
    int gpu = cuda && cuda->available(msg) == 1;
    if (gpu) {
        ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --concepts sepia --steps 5 --gan-weight 0 --device cuda "
                            "--out %s/dev_cuda.safetensors 2>/dev/null", test_bin(), dir, dir),
                         0);
        return;
    }
    const char *runs[][2] = {{"train", "--ngf 8 --concepts sepia"},
                             {"finetune", "--model %s/dev_cpu_train.safetensors --concept negate --rank 2"}};
    for (int i = 0; i < 2; i++) {
        char extra[512];
        snprintf(extra, sizeof extra, runs[i][1], dir);
        for (int d = 0; d < 2; d++) {
            const char *dev = d ? "auto" : "cpu";
            ck_assert_int_eq(sh("%s %s --data %s/ds --batch 4 --threads 2 --quiet --eval-pairs 8 %s --steps 6 "
                                "--gan-weight 0 --device %s --out %s/dev_%s_%s.safetensors 2>%s/dev.log",
                                test_bin(), runs[i][0], dir, extra, dev, dir, dev, runs[i][0], dir),
                             0);
            ck_assert_int_eq(sh("grep -q 'training on CUDA' %s/dev.log", dir), 1);
        }
        char a[300], b[300];
        snprintf(a, sizeof a, "%s/dev_cpu_%s.safetensors", dir, runs[i][0]);
        snprintf(b, sizeof b, "%s/dev_auto_%s.safetensors", dir, runs[i][0]);
        ck_assert_msg(same_weights(a, b), "%s: --device auto differs from --device cpu", runs[i][0]);
    }
    ck_assert_int_eq(sh("%s train " TRAIN_ARGS " --concepts sepia --steps 2 --gan-weight 0 --device cuda "
                        "--out %s/dev_x.safetensors 2>%s/dev.log",
                        test_bin(), dir, dir, dir),
                     1);
    ck_assert_int_eq(sh("grep -q 'cannot train on CUDA' %s/dev.log", dir), 0);
    ck_assert_int_eq(sh("test -e %s/dev_x.safetensors", dir), 1);
    (void)msg;
}
END_TEST

int main(void) {
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 600);
    tcase_add_unchecked_fixture(tc, make_dataset, remove_dataset);
    tcase_add_loop_test(tc, test_kill_and_resume, 0, 2);
    tcase_add_test(tc, test_deterministic);
    tcase_add_test(tc, test_training_improves);
    tcase_add_test(tc, test_bf16_training_matches_fp32);
    tcase_add_test(tc, test_finetune);
    tcase_add_test(tc, test_rank_search_and_reduction);
    tcase_add_test(tc, test_sketch_loss_terms);
    tcase_add_test(tc, test_concept_weights);
    tcase_add_test(tc, test_bad_options);
    tcase_add_test(tc, test_device_fallback);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
