/* ranksearch.c — rank search by truncating a probe adapter (see ranksearch.h). */
#include "ranksearch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lowrank.h"
#include "train.h"

static int layer_fan(const e2g_gen_config *cfg, int layer, int *cout) {
    e2g_layer_shape s;
    e2g_crucial_shape(cfg, layer, &s);
    *cout = s.cout;
    return s.cin * (s.k ? s.k * s.k : 1);
}

/* Replaces layer l of `a` (same ranks as `probe`) by the rank-k truncation
 * of probe's delta, zero-padded to the stored rank. */
static void truncate_layer(const e2g_gen_config *cfg, e2g_lora *a, const e2g_lora *probe, int l, int k) {
    int cout, fan = layer_fan(cfg, l, &cout), r = probe->rank[l];
    float *Bk = e2g_xcalloc((size_t)cout * (k ? k : 1), sizeof(float));
    float *Ak = e2g_xcalloc((size_t)(k ? k : 1) * fan, sizeof(float));
    if (k) e2g_lowrank_truncate(probe->B[l], probe->A[l], cout, r, fan, k, Bk, Ak);
    memset(a->B[l], 0, (size_t)cout * r * sizeof(float));
    memset(a->A[l], 0, (size_t)r * fan * sizeof(float));
    for (int o = 0; o < cout; o++) memcpy(a->B[l] + (size_t)o * r, Bk + (size_t)o * k, k * sizeof(float));
    memcpy(a->A[l], Ak, (size_t)k * fan * sizeof(float));
    free(Bk), free(Ak);
}

static double val_psnr(const e2g_model *m, e2g_lora *a, const e2g_dataset *val, int pairs) {
    e2g_train_target t = {(e2g_model *)m, a};
    json_t *e = e2g_evaluate(&t, val, pairs, NULL);
    double psnr = json_number_value(json_object_get(e, "mean_psnr"));
    json_decref(e);
    return psnr;
}

/* An adapter with the given ranks from the probe's truncated factors (same
 * scales, the probe's embedding). */
static e2g_lora *truncated_adapter(const e2g_gen_config *cfg, const e2g_lora *probe, const int *ranks) {
    e2g_lora *a = e2g_lora_new(cfg, ranks, probe->scale);
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        int cout, fan = layer_fan(cfg, l, &cout);
        if (ranks[l])
            e2g_lowrank_truncate(probe->B[l], probe->A[l], cout, probe->rank[l], fan, ranks[l], a->B[l], a->A[l]);
    }
    memcpy(a->concept, probe->concept, (size_t)cfg->ctx_tokens * e2g_gen_c4(cfg) * sizeof(float));
    return a;
}

e2g_lora *e2g_rank_search(const e2g_model *m, const e2g_lora *probe, const e2g_dataset *val,
                          int eval_pairs, double tolerance, json_t **evidence) {
    const e2g_gen_config *cfg = &m->cfg;
    e2g_lora *trial = e2g_lora_new(cfg, probe->rank, probe->scale);
    memcpy(trial->memory, probe->memory, probe->numel * sizeof(float));
    double base = val_psnr(m, trial, val, eval_pairs);
    int ranks[E2G_N_CRUCIAL];
    json_t *layers = json_object();
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        int R = probe->rank[l];
        ranks[l] = R;
        json_t *tried = json_object();
        for (int k = 0; k < R; k = k ? 2 * k : 1) {
            truncate_layer(cfg, trial, probe, l, k);
            double psnr = val_psnr(m, trial, val, eval_pairs);
            char key[16];
            snprintf(key, sizeof key, "%d", k);
            json_object_set_new(tried, key, json_real(psnr));
            if (base - psnr <= tolerance) {
                ranks[l] = k;
                break;
            }
        }
        /* back to the probe's delta before the next layer */
        int cout, fan = layer_fan(cfg, l, &cout);
        memcpy(trial->A[l], probe->A[l], (size_t)R * fan * sizeof(float));
        memcpy(trial->B[l], probe->B[l], (size_t)cout * R * sizeof(float));
        json_object_set_new(layers, e2g_crucial_name(l), json_pack("{s:i,s:o}", "rank", ranks[l], "psnr_by_rank", tried));
    }
    e2g_lora_free(trial);
    /* Truncations chosen one layer at a time add up: while the joint
     * truncation loses more than the tolerance, raise the rank of the one
     * layer whose raise gains the most PSNR per added parameter. */
    e2g_lora *chosen = truncated_adapter(cfg, probe, ranks);
    double combined = val_psnr(m, chosen, val, eval_pairs);
    json_t *repairs = json_array();
    while (base - combined > tolerance) {
        int best = -1, best_rank = 0;
        double best_psnr = combined, best_gain = 0;
        for (int l = 0; l < E2G_N_CRUCIAL; l++) {
            if (ranks[l] >= probe->rank[l]) continue;
            int saved = ranks[l], cout, fan = layer_fan(cfg, l, &cout);
            ranks[l] = saved ? 2 * saved : 1;
            if (ranks[l] > probe->rank[l]) ranks[l] = probe->rank[l];
            e2g_lora *t = truncated_adapter(cfg, probe, ranks);
            double psnr = val_psnr(m, t, val, eval_pairs);
            double gain = (psnr - combined) / ((double)(ranks[l] - saved) * (cout + fan));
            if (best < 0 || gain > best_gain) best = l, best_rank = ranks[l], best_psnr = psnr, best_gain = gain;
            e2g_lora_free(t);
            ranks[l] = saved;
        }
        if (best < 0) break; /* every layer is back at the probe's rank */
        ranks[best] = best_rank;
        combined = best_psnr;
        json_array_append_new(repairs, json_pack("{s:s,s:i,s:f}", "layer", e2g_crucial_name(best), "rank",
                                                 best_rank, "psnr", best_psnr));
        json_object_set_new(json_object_get(layers, e2g_crucial_name(best)), "rank", json_integer(best_rank));
        e2g_lora_free(chosen);
        chosen = truncated_adapter(cfg, probe, ranks);
    }
    size_t params = 0, probe_params = 0;
    for (int l = 0; l < E2G_N_CRUCIAL; l++) {
        int cout, fan = layer_fan(cfg, l, &cout);
        probe_params += (size_t)probe->rank[l] * (cout + fan);
        params += (size_t)ranks[l] * (cout + fan);
    }
    *evidence = json_pack("{s:f,s:f,s:f,s:I,s:I,s:o,s:o}", "probe_psnr", base, "tolerance_db", tolerance,
                          "truncated_psnr", combined, "probe_lora_params", (json_int_t)probe_params,
                          "chosen_lora_params", (json_int_t)params, "layers", layers, "joint_repairs", repairs);
    return chosen;
}
