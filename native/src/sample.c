/* Sampler handle: batch-1 inference with its own state and RNG. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "internal.h"

struct charlstm_sampler {
    const charlstm_model *model;
    rng_state rng;
    float *h, *c;       /* (L, H) */
    float *gates;       /* (4H) */
    float *tanh_c;      /* (H) scratch */
    float *c_next;      /* (H) scratch */
    float *logits;      /* (V) */
    float *work;        /* (2V) scratch for charlstm_sample_logits */
    int32_t *work_index;/* (V) */
    float *packed_hh[CHARLSTM_MAX_LAYERS]; /* w_hh of each layer, packed */
    float *packed_ih[CHARLSTM_MAX_LAYERS]; /* w_ih of layers >= 1, packed */
    int has_logits;
    char error[CHARLSTM_ERROR_SIZE];
};

charlstm_status charlstm_sampler_init(const charlstm_model *model, uint64_t seed,
                                      charlstm_sampler **out) {
    if (!out) return set_init_error(CHARLSTM_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!model) return set_init_error(CHARLSTM_INVALID_ARG, "model is NULL");
    charlstm_sampler *s = calloc(1, sizeof *s);
    if (!s) return set_init_error(CHARLSTM_NOMEM, "cannot allocate the sampler handle");
    size_t L = (size_t)model->cfg.n_layers, H = (size_t)model->cfg.n_hidden;
    size_t V = (size_t)model->cfg.n_vocab;
    s->model = model;
    rng_seed(&s->rng, seed);
    s->h = alloc_floats(L * H);
    s->c = alloc_floats(L * H);
    s->gates = alloc_floats(4 * H);
    s->tanh_c = alloc_floats(H);
    s->c_next = alloc_floats(H);
    s->logits = alloc_floats(V);
    s->work = alloc_floats(2 * V);
    s->work_index = (int32_t *)alloc_floats(V);
    size_t packed_floats = charlstm_gemm_pack_b_size((int)H, (int)(4 * H)) / sizeof(float) + 1;
    int packed_ok = 1;
    for (size_t l = 0; l < L; l++) {
        s->packed_hh[l] = alloc_floats(packed_floats);
        s->packed_ih[l] = l > 0 ? alloc_floats(packed_floats) : NULL;
        packed_ok = packed_ok && s->packed_hh[l] && (l == 0 || s->packed_ih[l]);
    }
    if (!s->h || !s->c || !s->gates || !s->tanh_c || !s->c_next || !s->logits || !s->work ||
        !s->work_index || !packed_ok) {
        charlstm_sampler_free(s);
        return set_init_error(CHARLSTM_NOMEM, "cannot allocate the sampler state");
    }
    *out = s;
    return CHARLSTM_OK;
}

void charlstm_sampler_free(charlstm_sampler *s) {
    if (!s) return;
    free_floats(s->h);
    free_floats(s->c);
    free_floats(s->gates);
    free_floats(s->tanh_c);
    free_floats(s->c_next);
    free_floats(s->logits);
    free_floats(s->work);
    free_floats((float *)s->work_index);
    for (int l = 0; l < CHARLSTM_MAX_LAYERS; l++) {
        free_floats(s->packed_hh[l]);
        free_floats(s->packed_ih[l]);
    }
    free(s);
}

const char *charlstm_sampler_last_error(const charlstm_sampler *s) {
    return s ? s->error : "sampler is NULL";
}

void charlstm_sampler_reset(charlstm_sampler *s) {
    if (!s) return;
    size_t n = (size_t)s->model->cfg.n_layers * s->model->cfg.n_hidden;
    memset(s->h, 0, n * sizeof(float));
    memset(s->c, 0, n * sizeof(float));
    s->has_logits = 0;
}

/* Advances every layer by one token; computes logits only when asked. */
static void step_token(charlstm_sampler *s, int32_t token, int want_logits) {
    const charlstm_model *m = s->model;
    int H = m->cfg.n_hidden, V = m->cfg.n_vocab;
    size_t G = 4 * (size_t)H;
    lstm_weights w;
    model_weights_view(m, m->params, &w);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        float *h = s->h + (size_t)l * H, *c = s->c + (size_t)l * H;
        if (l == 0) {
            memcpy(s->gates, w.w_ih[0] + (size_t)token * G, G * sizeof(float));
        } else {
            charlstm_gemm_nn_packed(1, (int)G, H, s->h + (size_t)(l - 1) * H, H,
                                    s->packed_ih[l], s->gates, (int)G, 0);
        }
        charlstm_gemm_nn_packed(1, (int)G, H, h, H, s->packed_hh[l], s->gates, (int)G, 1);
        lstm_cell_forward(1, H, s->gates, w.bias[l], c, s->c_next, h, s->tanh_c);
        memcpy(c, s->c_next, (size_t)H * sizeof(float));
    }
    if (!want_logits) return;
    memcpy(s->logits, w.out_b, (size_t)V * sizeof(float));
    const float *top = s->h + (size_t)(m->cfg.n_layers - 1) * H;
    charlstm_gemm_nn(1, V, H, top, H, w.out_w, V, s->logits, V, 1);
    s->has_logits = 1;
}

/* Copies the recurrent and upper-layer input weights into packed panels. */
static void pack_weights(charlstm_sampler *s) {
    const charlstm_model *m = s->model;
    int H = m->cfg.n_hidden, G = 4 * H;
    lstm_weights w;
    model_weights_view(m, m->params, &w);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        charlstm_gemm_pack_b(H, G, w.w_hh[l], G, s->packed_hh[l]);
        if (l > 0) charlstm_gemm_pack_b(H, G, w.w_ih[l], G, s->packed_ih[l]);
    }
}

charlstm_status charlstm_sampler_feed(charlstm_sampler *s, const int32_t *tokens, size_t n) {
    if (!s) return CHARLSTM_INVALID_ARG;
    if (!tokens && n > 0) return set_error(s->error, CHARLSTM_INVALID_ARG, "tokens is NULL");
    int32_t V = s->model->cfg.n_vocab;
    for (size_t k = 0; k < n; k++)
        if (tokens[k] < 0 || tokens[k] >= V)
            return set_error(s->error, CHARLSTM_INVALID_ARG,
                             "token id %d at position %zu is outside the vocabulary [0, %d)",
                             (int)tokens[k], k, (int)V);
    pack_weights(s);
    for (size_t k = 0; k < n; k++) step_token(s, tokens[k], k + 1 == n);
    return CHARLSTM_OK;
}

static charlstm_status check_filters(char *error, float temperature, float top_p) {
    if (!(temperature >= 0.0f) || !isfinite(temperature))
        return set_error(error, CHARLSTM_INVALID_ARG,
                         "temperature = %g must be a number >= 0", (double)temperature);
    if (!(top_p > 0.0f) || isnan(top_p))
        return set_error(error, CHARLSTM_INVALID_ARG, "top_p = %g must be > 0", (double)top_p);
    return CHARLSTM_OK;
}

charlstm_status charlstm_sampler_generate(charlstm_sampler *s, size_t n, float temperature,
                                          int32_t top_k, float top_p, int32_t *out) {
    if (!s) return CHARLSTM_INVALID_ARG;
    if (!out && n > 0) return set_error(s->error, CHARLSTM_INVALID_ARG, "out is NULL");
    charlstm_status st = check_filters(s->error, temperature, top_p);
    if (st != CHARLSTM_OK) return st;
    if (!s->has_logits)
        return set_error(s->error, CHARLSTM_INVALID_ARG,
                         "feed at least one token before generating");
    int32_t V = s->model->cfg.n_vocab;
    for (size_t k = 0; k < n; k++) {
        float u = rng_uniform(&s->rng);
        int32_t next = 0;
        charlstm_sample_logits(s->logits, V, temperature, top_k, top_p, u, s->work,
                               s->work_index, &next);
        out[k] = next;
        step_token(s, next, 1);
    }
    return CHARLSTM_OK;
}

const float *charlstm_sampler_logits(const charlstm_sampler *s) {
    return s && s->has_logits ? s->logits : NULL;
}

void charlstm_sampler_get_rng(const charlstm_sampler *s, uint64_t out[4]) {
    if (s && out) memcpy(out, s->rng.s, sizeof s->rng.s);
}

void charlstm_sampler_set_rng(charlstm_sampler *s, const uint64_t in[4]) {
    if (s && in) memcpy(s->rng.s, in, sizeof s->rng.s);
}

// ----------------------------------------------------------------------------
// drawing one index from logits

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t k = 1; k < n; k++)
        if (x[k] > x[best]) best = k;
    return best;
}

/* Sorts idx[0..n) by descending p, ties by ascending index (insertion sort:
 * vocabularies are small, and the order must be deterministic). */
static void sort_by_probability(const float *p, int32_t *idx, int32_t n) {
    for (int32_t k = 0; k < n; k++) idx[k] = k;
    for (int32_t k = 1; k < n; k++) {
        int32_t cur = idx[k], j = k - 1;
        while (j >= 0 && p[idx[j]] < p[cur]) {
            idx[j + 1] = idx[j];
            j--;
        }
        idx[j + 1] = cur;
    }
}

charlstm_status charlstm_sample_logits(const float *logits, int32_t n, float temperature,
                                       int32_t top_k, float top_p, float u, float *work,
                                       int32_t *work_index, int32_t *out) {
    if (!logits || !work || !work_index || !out || n < 1) return CHARLSTM_INVALID_ARG;
    char unused[CHARLSTM_ERROR_SIZE];
    if (check_filters(unused, temperature, top_p) != CHARLSTM_OK) return CHARLSTM_INVALID_ARG;
    if (temperature == 0.0f) {
        *out = argmax(logits, n);
        return CHARLSTM_OK;
    }

    // softmax of logits / temperature, in double for the normaliser
    float *p = work;
    float maxv = logits[argmax(logits, n)];
    double sum = 0.0;
    for (int32_t k = 0; k < n; k++) {
        p[k] = expf((logits[k] - maxv) / temperature);
        sum += p[k];
    }
    for (int32_t k = 0; k < n; k++) p[k] = (float)(p[k] / sum);

    // keep the top-k, then the smallest prefix whose mass reaches top_p
    int32_t kept = n;
    int filtered = (top_k > 0 && top_k < n) || top_p < 1.0f;
    if (filtered) {
        sort_by_probability(p, work_index, n);
        if (top_k > 0 && top_k < n) kept = top_k;
        if (top_p < 1.0f) {
            double mass = 0.0;
            for (int32_t k = 0; k < kept; k++) {
                mass += p[work_index[k]];
                if (mass >= top_p) {
                    kept = k + 1;
                    break;
                }
            }
        }
    }

    // inverse-CDF draw over the kept set
    double kept_mass = 0.0;
    for (int32_t k = 0; k < kept; k++) kept_mass += p[filtered ? work_index[k] : k];
    double target = (double)u * kept_mass, cdf = 0.0;
    int32_t chosen = filtered ? work_index[kept - 1] : n - 1;
    for (int32_t k = 0; k < kept; k++) {
        int32_t id = filtered ? work_index[k] : k;
        cdf += p[id];
        if (target < cdf) {
            chosen = id;
            break;
        }
    }
    // rounding can leave target >= cdf; fall back to the last id with mass
    if (!filtered && target >= cdf)
        while (chosen > 0 && p[chosen] == 0.0f) chosen--;
    *out = chosen;
    return CHARLSTM_OK;
}
