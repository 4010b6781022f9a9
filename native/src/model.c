/* Model handle: parameter block, tensor table, seeded initialisation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_DIM (1 << 20)

void charlstm_model_config_default(charlstm_model_config *cfg) {
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->n_vocab = 65;
    cfg->n_hidden = 256;
    cfg->n_layers = 2;
    cfg->forget_bias = 1.0f;
    cfg->seed = 1234;
}

static void add_tensor(charlstm_model *m, const char *name, int32_t rows, int32_t cols) {
    charlstm_tensor_info *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = cols > 0 ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols > 0 ? cols : 0;
    t->n_elements = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    t->offset = m->n_params;
    m->n_params += t->n_elements;
}

static void build_tensor_table(charlstm_model *m) {
    int32_t V = m->cfg.n_vocab, H = m->cfg.n_hidden;
    char name[32];
    for (int l = 0; l < m->cfg.n_layers; l++) {
        snprintf(name, sizeof name, "lstm.%d.w_ih", l);
        add_tensor(m, name, l == 0 ? V : H, 4 * H);
        snprintf(name, sizeof name, "lstm.%d.w_hh", l);
        add_tensor(m, name, H, 4 * H);
        snprintf(name, sizeof name, "lstm.%d.bias", l);
        add_tensor(m, name, 4 * H, 0);
    }
    add_tensor(m, "out.weight", H, V);
    add_tensor(m, "out.bias", V, 0);
}

void model_weights_view(const charlstm_model *model, float *block, lstm_weights *w) {
    memset(w, 0, sizeof *w);
    for (int l = 0; l < model->cfg.n_layers; l++) {
        w->w_ih[l] = block + model->tensors[3 * l].offset;
        w->w_hh[l] = block + model->tensors[3 * l + 1].offset;
        w->bias[l] = block + model->tensors[3 * l + 2].offset;
    }
    int last = 3 * model->cfg.n_layers;
    w->out_w = block + model->tensors[last].offset;
    w->out_b = block + model->tensors[last + 1].offset;
}

/* Xavier/Glorot uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)). */
static void fill_xavier(rng_state *rng, float *w, int32_t fan_in, int32_t fan_out) {
    float a = sqrtf(6.0f / (float)(fan_in + fan_out));
    size_t n = (size_t)fan_in * (size_t)fan_out;
    for (size_t i = 0; i < n; i++) w[i] = (2.0f * rng_uniform(rng) - 1.0f) * a;
}

static void init_params(charlstm_model *m) {
    rng_state rng;
    rng_seed(&rng, m->cfg.seed);
    lstm_weights w;
    model_weights_view(m, m->params, &w);
    int32_t V = m->cfg.n_vocab, H = m->cfg.n_hidden;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        fill_xavier(&rng, w.w_ih[l], l == 0 ? V : H, 4 * H);
        fill_xavier(&rng, w.w_hh[l], H, 4 * H);
        for (int32_t j = 0; j < H; j++) w.bias[l][H + j] = m->cfg.forget_bias;
    }
    fill_xavier(&rng, w.out_w, H, V);
}

static charlstm_status check_config(const charlstm_model_config *cfg) {
    if (cfg->n_vocab < 2 || cfg->n_vocab > MAX_DIM)
        return set_init_error(CHARLSTM_INVALID_ARG, "n_vocab = %d is out of range [2, %d]",
                              (int)cfg->n_vocab, MAX_DIM);
    if (cfg->n_hidden < 1 || cfg->n_hidden > 65536)
        return set_init_error(CHARLSTM_INVALID_ARG, "n_hidden = %d is out of range [1, 65536]",
                              (int)cfg->n_hidden);
    if (cfg->n_layers < 1 || cfg->n_layers > CHARLSTM_MAX_LAYERS)
        return set_init_error(CHARLSTM_INVALID_ARG, "n_layers = %d is out of range [1, %d]",
                              (int)cfg->n_layers, CHARLSTM_MAX_LAYERS);
    if (!isfinite(cfg->forget_bias))
        return set_init_error(CHARLSTM_INVALID_ARG, "forget_bias is not a finite number");
    return CHARLSTM_OK;
}

charlstm_status charlstm_model_init(const charlstm_model_config *cfg, charlstm_model **out) {
    if (!out) return set_init_error(CHARLSTM_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!cfg) return set_init_error(CHARLSTM_INVALID_ARG, "cfg is NULL");
    charlstm_status st = check_config(cfg);
    if (st != CHARLSTM_OK) return st;

    charlstm_model *m = calloc(1, sizeof *m);
    if (!m) return set_init_error(CHARLSTM_NOMEM, "cannot allocate the model handle");
    m->cfg = *cfg;
    build_tensor_table(m);
    m->params = alloc_floats(m->n_params);
    if (!m->params) {
        size_t n_params = m->n_params;
        free(m);
        return set_init_error(CHARLSTM_NOMEM, "cannot allocate %zu parameters", n_params);
    }
    init_params(m);
    *out = m;
    return CHARLSTM_OK;
}

void charlstm_model_free(charlstm_model *model) {
    if (!model) return;
    free_floats(model->params);
    free(model);
}

void charlstm_model_get_config(const charlstm_model *model, charlstm_model_config *cfg) {
    if (model && cfg) *cfg = model->cfg;
}

size_t charlstm_model_n_params(const charlstm_model *model) {
    return model ? model->n_params : 0;
}

float *charlstm_model_params(charlstm_model *model) { return model ? model->params : NULL; }

int32_t charlstm_model_n_tensors(const charlstm_model *model) {
    return model ? model->n_tensors : 0;
}

charlstm_status charlstm_model_tensor_info(const charlstm_model *model, int32_t index,
                                           charlstm_tensor_info *info) {
    if (!model || !info) return CHARLSTM_INVALID_ARG;
    if (index < 0 || index >= model->n_tensors) return CHARLSTM_INVALID_ARG;
    *info = model->tensors[index];
    return CHARLSTM_OK;
}
