/* Trainer handle: buffers for a fixed (B, T), the training step, evaluation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "internal.h"
#include "lstm.h"

void charlstm_train_config_default(charlstm_train_config *cfg) {
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->batch_size = 32;
    cfg->seq_len = 64;
    cfg->optimizer = CHARLSTM_OPTIMIZER_ADAM;
    cfg->lr = 2e-3f;
    cfg->momentum = 0.0f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = 1e-8f;
    cfg->weight_decay = 0.0f;
    cfg->clip_norm = 5.0f;
    cfg->clip_value = 0.0f;
    cfg->dropout = 0.0f;
    cfg->seed = 1234;
}

static charlstm_status check_train_config(const charlstm_train_config *c) {
    if (c->batch_size < 1 || c->batch_size > 65536)
        return set_init_error(CHARLSTM_INVALID_ARG,
                              "batch_size = %d is out of range [1, 65536]", (int)c->batch_size);
    if (c->seq_len < 1 || c->seq_len > 65536)
        return set_init_error(CHARLSTM_INVALID_ARG, "seq_len = %d is out of range [1, 65536]",
                              (int)c->seq_len);
    if (c->optimizer != CHARLSTM_OPTIMIZER_SGD && c->optimizer != CHARLSTM_OPTIMIZER_ADAM)
        return set_init_error(CHARLSTM_INVALID_ARG, "optimizer = %d is not 0 (SGD) or 1 (Adam)",
                              (int)c->optimizer);
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return set_init_error(CHARLSTM_INVALID_ARG, "lr = %g must be a positive number",
                              (double)c->lr);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return set_init_error(CHARLSTM_INVALID_ARG, "momentum = %g is outside [0, 1)",
                              (double)c->momentum);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return set_init_error(CHARLSTM_INVALID_ARG, "beta1 = %g or beta2 = %g is outside [0, 1)",
                              (double)c->beta1, (double)c->beta2);
    if (!(c->eps > 0.0f))
        return set_init_error(CHARLSTM_INVALID_ARG, "eps = %g must be positive", (double)c->eps);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return set_init_error(CHARLSTM_INVALID_ARG, "weight_decay = %g must be >= 0",
                              (double)c->weight_decay);
    if (isnan(c->clip_norm) || isnan(c->clip_value))
        return set_init_error(CHARLSTM_INVALID_ARG, "clip_norm or clip_value is NaN");
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return set_init_error(CHARLSTM_INVALID_ARG, "dropout = %g is outside [0, 1)",
                              (double)c->dropout);
    return CHARLSTM_OK;
}

charlstm_status charlstm_trainer_init(charlstm_model *model, const charlstm_train_config *cfg,
                                      charlstm_trainer **out) {
    if (!out) return set_init_error(CHARLSTM_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!model) return set_init_error(CHARLSTM_INVALID_ARG, "model is NULL");
    if (!cfg) return set_init_error(CHARLSTM_INVALID_ARG, "cfg is NULL");
    charlstm_status st = check_train_config(cfg);
    if (st != CHARLSTM_OK) return st;

    charlstm_trainer *t = calloc(1, sizeof *t);
    if (!t) return set_init_error(CHARLSTM_NOMEM, "cannot allocate the trainer handle");
    t->model = model;
    t->cfg = *cfg;
    t->lr = cfg->lr;
    rng_seed(&t->rng, cfg->seed);
    if (!lstm_buffers_alloc(&t->buf, &model->cfg, cfg->batch_size, cfg->seq_len,
                            cfg->dropout > 0.0f)) {
        charlstm_trainer_free(t);
        return set_init_error(CHARLSTM_NOMEM,
                              "cannot allocate activations for batch_size %d, seq_len %d",
                              (int)cfg->batch_size, (int)cfg->seq_len);
    }
    size_t n = model->n_params;
    size_t n_state = (size_t)model->cfg.n_layers * cfg->batch_size * model->cfg.n_hidden;
    t->grads = alloc_floats(n);
    t->opt.m = alloc_floats(n);
    t->opt.v = alloc_floats(n);
    t->state_h = alloc_floats(n_state);
    t->state_c = alloc_floats(n_state);
    t->eval_h = alloc_floats(n_state);
    t->eval_c = alloc_floats(n_state);
    t->dstate_h = alloc_floats(n_state);
    t->dstate_c = alloc_floats(n_state);
    if (!t->grads || !t->opt.m || !t->opt.v || !t->state_h || !t->state_c || !t->eval_h ||
        !t->eval_c || !t->dstate_h || !t->dstate_c) {
        charlstm_trainer_free(t);
        return set_init_error(CHARLSTM_NOMEM, "cannot allocate gradients and optimizer state");
    }
    *out = t;
    return CHARLSTM_OK;
}

void charlstm_trainer_free(charlstm_trainer *t) {
    if (!t) return;
    lstm_buffers_free(&t->buf);
    free_floats(t->grads);
    free_floats(t->opt.m);
    free_floats(t->opt.v);
    free_floats(t->state_h);
    free_floats(t->state_c);
    free_floats(t->eval_h);
    free_floats(t->eval_c);
    free_floats(t->dstate_h);
    free_floats(t->dstate_c);
    free(t);
}

const char *charlstm_trainer_last_error(const charlstm_trainer *t) {
    return t ? t->error : "trainer is NULL";
}

charlstm_status charlstm_trainer_set_lr(charlstm_trainer *t, float lr) {
    if (!t) return CHARLSTM_INVALID_ARG;
    if (!(lr > 0.0f) || !isfinite(lr))
        return set_error(t->error, CHARLSTM_INVALID_ARG, "lr = %g must be a positive number",
                         (double)lr);
    t->lr = lr;
    return CHARLSTM_OK;
}

float charlstm_trainer_get_lr(const charlstm_trainer *t) { return t ? t->lr : 0.0f; }

// ----------------------------------------------------------------------------
// the training step

static size_t state_size(const charlstm_trainer *t) {
    return (size_t)t->model->cfg.n_layers * t->cfg.batch_size * t->model->cfg.n_hidden;
}

/* Checks token buffers and copies them from (B, T) to time-major (T, B). */
static charlstm_status load_tokens(charlstm_trainer *t, const int32_t *inputs,
                                   const int32_t *targets, size_t n) {
    int B = t->cfg.batch_size, T = t->cfg.seq_len, V = t->model->cfg.n_vocab;
    if (!inputs || !targets)
        return set_error(t->error, CHARLSTM_INVALID_ARG, "inputs or targets is NULL");
    if (n != (size_t)B * T)
        return set_error(t->error, CHARLSTM_INVALID_ARG,
                         "token buffers hold %zu ids but batch_size * seq_len = %d * %d = %zu",
                         n, B, T, (size_t)B * T);
    for (size_t k = 0; k < n; k++) {
        if (inputs[k] < 0 || inputs[k] >= V || targets[k] < 0 || targets[k] >= V) {
            int32_t bad = (inputs[k] < 0 || inputs[k] >= V) ? inputs[k] : targets[k];
            return set_error(t->error, CHARLSTM_INVALID_ARG,
                             "token id %d at position %zu is outside the vocabulary [0, %d)",
                             (int)bad, k, V);
        }
    }
    for (int b = 0; b < B; b++) {
        for (int s = 0; s < T; s++) {
            t->buf.inputs[(size_t)s * B + b] = inputs[(size_t)b * T + s];
            t->buf.targets[(size_t)s * B + b] = targets[(size_t)b * T + s];
        }
    }
    return CHARLSTM_OK;
}

void charlstm_trainer_zero_grad(charlstm_trainer *t) {
    if (!t) return;
    memset(t->grads, 0, t->model->n_params * sizeof(float));
    memset(t->dstate_h, 0, state_size(t) * sizeof(float));
    memset(t->dstate_c, 0, state_size(t) * sizeof(float));
}

/* Forward and backward on checked tokens; see charlstm_trainer_forward_backward. */
static charlstm_status forward_backward(charlstm_trainer *t, const int32_t *inputs,
                                        const int32_t *targets, size_t n, float *loss,
                                        int accumulate) {
    charlstm_status st = load_tokens(t, inputs, targets, n);
    if (st != CHARLSTM_OK) return st;

    lstm_weights w, dw;
    model_weights_view(t->model, t->model->params, &w);
    model_weights_view(t->model, t->grads, &dw);
    float dropout = t->cfg.dropout;
    double loss_sum = lstm_forward(&t->buf, &t->model->cfg, &w, t->state_h, t->state_c,
                                   dropout, &t->rng, 1, NULL);
    lstm_backward(&t->buf, &t->model->cfg, &w, &dw, t->dstate_h, t->dstate_c, accumulate);
    lstm_carry_state(&t->buf, &t->model->cfg, t->state_h, t->state_c);
    float mean = (float)(loss_sum / (double)n);
    if (loss) *loss = mean;
    if (!isfinite(mean))
        return set_error(t->error, CHARLSTM_NONFINITE, "the loss is %g", (double)mean);
    return CHARLSTM_OK;
}

charlstm_status charlstm_trainer_forward_backward(charlstm_trainer *t, const int32_t *inputs,
                                                  const int32_t *targets, size_t n,
                                                  float *loss) {
    if (!t) return CHARLSTM_INVALID_ARG;
    return forward_backward(t, inputs, targets, n, loss, 1);
}

/* Returns the global-norm scale and element limit of the configured clipping. */
static grad_clip clip_for_norm(const charlstm_train_config *cfg, double norm) {
    grad_clip clip = {1.0f, cfg->clip_value > 0.0f ? cfg->clip_value : 0.0f};
    if (cfg->clip_norm > 0.0f && norm > cfg->clip_norm)
        clip.scale = (float)(cfg->clip_norm / (norm + 1e-6));
    return clip;
}

charlstm_status charlstm_trainer_clip_grad(charlstm_trainer *t, float *grad_norm) {
    if (!t) return CHARLSTM_INVALID_ARG;
    size_t n = t->model->n_params;
    double norm = grad_global_norm(t->grads, n);
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm))
        return set_error(t->error, CHARLSTM_NONFINITE, "the gradient norm is %g", norm);
    grad_clip clip = clip_for_norm(&t->cfg, norm);
    if (clip.scale != 1.0f) grad_scale(t->grads, n, clip.scale);
    if (clip.limit > 0.0f) grad_clamp(t->grads, n, clip.limit);
    return CHARLSTM_OK;
}

void charlstm_trainer_update(charlstm_trainer *t) {
    if (!t) return;
    optim_update(&t->cfg, t->lr, NULL, &t->opt, t->model->params, t->grads,
                 t->model->n_params);
}

charlstm_status charlstm_trainer_step(charlstm_trainer *t, const int32_t *inputs,
                                      const int32_t *targets, size_t n, float *loss,
                                      float *grad_norm) {
    if (!t) return CHARLSTM_INVALID_ARG;
    // the backward pass overwrites the gradients, so they need no zeroing, and
    // clipping is applied inside the update instead of as passes of its own
    charlstm_status st = forward_backward(t, inputs, targets, n, loss, 0);
    if (st != CHARLSTM_OK) return st;
    size_t n_params = t->model->n_params;
    double norm = grad_global_norm(t->grads, n_params);
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm))
        return set_error(t->error, CHARLSTM_NONFINITE, "the gradient norm is %g", norm);
    grad_clip clip = clip_for_norm(&t->cfg, norm);
    optim_update(&t->cfg, t->lr, &clip, &t->opt, t->model->params, t->grads, n_params);
    return CHARLSTM_OK;
}

charlstm_status charlstm_trainer_evaluate(charlstm_trainer *t, const int32_t *inputs,
                                          const int32_t *targets, size_t n, double *loss_sum,
                                          int64_t *n_correct) {
    if (!t) return CHARLSTM_INVALID_ARG;
    if (!loss_sum || !n_correct)
        return set_error(t->error, CHARLSTM_INVALID_ARG, "loss_sum or n_correct is NULL");
    charlstm_status st = load_tokens(t, inputs, targets, n);
    if (st != CHARLSTM_OK) return st;
    lstm_weights w;
    model_weights_view(t->model, t->model->params, &w);
    int64_t correct = 0;
    double sum = lstm_forward(&t->buf, &t->model->cfg, &w, t->eval_h, t->eval_c, 0.0f, NULL,
                              0, &correct);
    lstm_carry_state(&t->buf, &t->model->cfg, t->eval_h, t->eval_c);
    *loss_sum += sum;
    *n_correct += correct;
    if (!isfinite(sum))
        return set_error(t->error, CHARLSTM_NONFINITE, "the evaluation loss is %g", sum);
    return CHARLSTM_OK;
}

void charlstm_trainer_reset_state(charlstm_trainer *t) {
    if (!t) return;
    memset(t->state_h, 0, state_size(t) * sizeof(float));
    memset(t->state_c, 0, state_size(t) * sizeof(float));
}

void charlstm_trainer_reset_eval_state(charlstm_trainer *t) {
    if (!t) return;
    memset(t->eval_h, 0, state_size(t) * sizeof(float));
    memset(t->eval_c, 0, state_size(t) * sizeof(float));
}

// ----------------------------------------------------------------------------
// buffer access for checkpoints and tests

float *charlstm_trainer_grads(charlstm_trainer *t) { return t ? t->grads : NULL; }
float *charlstm_trainer_moment1(charlstm_trainer *t) { return t ? t->opt.m : NULL; }
float *charlstm_trainer_moment2(charlstm_trainer *t) { return t ? t->opt.v : NULL; }
float *charlstm_trainer_state_h(charlstm_trainer *t) { return t ? t->state_h : NULL; }
float *charlstm_trainer_state_c(charlstm_trainer *t) { return t ? t->state_c : NULL; }
float *charlstm_trainer_dstate_h(charlstm_trainer *t) { return t ? t->dstate_h : NULL; }
float *charlstm_trainer_dstate_c(charlstm_trainer *t) { return t ? t->dstate_c : NULL; }

int64_t charlstm_trainer_get_step(const charlstm_trainer *t) { return t ? t->opt.step : 0; }

void charlstm_trainer_set_step(charlstm_trainer *t, int64_t step) {
    if (t && step >= 0) t->opt.step = step;
}

void charlstm_trainer_get_rng(const charlstm_trainer *t, uint64_t out[4]) {
    if (t && out) memcpy(out, t->rng.s, sizeof t->rng.s);
}

void charlstm_trainer_set_rng(charlstm_trainer *t, const uint64_t in[4]) {
    if (t && in) memcpy(t->rng.s, in, sizeof t->rng.s);
}
