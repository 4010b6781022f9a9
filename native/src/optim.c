/* Gradient clipping and the SGD and Adam updates over flat buffers.
 *
 * Every pass splits the buffer into fixed chunks shared out among threads.
 * The norm adds the per-chunk sums in chunk order, so its value does not
 * depend on the thread count. */
#include <math.h>

#include "gemm.h"
#include "internal.h"
#include "isa.h"

// Elements per chunk; also the smallest buffer worth a second thread.
#define CHUNK 16384

static int threads_for(size_t n) { return n >= 2 * CHUNK ? charlstm_get_num_threads() : 1; }

/* Returns the sum of squares of g[0..n) in double, over 8 independent lanes
 * so that the loop vectorizes without reassociating any one sum. */
CLONE_FOR_ISA
static double sum_of_squares(const float *restrict g, size_t n) {
    double lanes[8] = {0.0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) lanes[k] += (double)g[i + k] * (double)g[i + k];
    for (; i < n; i++) lanes[0] += (double)g[i] * (double)g[i];
    double sum = 0.0;
    for (int k = 0; k < 8; k++) sum += lanes[k];
    return sum;
}

double grad_global_norm(const float *g, size_t n) {
    size_t n_chunks = (n + CHUNK - 1) / CHUNK;
    double partial[256];
    double total = 0.0;
    // chunks are summed in groups of 256 so the partial sums fit on the stack
    for (size_t first = 0; first < n_chunks; first += 256) {
        size_t count = n_chunks - first < 256 ? n_chunks - first : 256;
        int threads = threads_for(count * CHUNK);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (size_t c = 0; c < count; c++) {
            size_t begin = (first + c) * CHUNK;
            size_t end = begin + CHUNK < n ? begin + CHUNK : n;
            partial[c] = sum_of_squares(g + begin, end - begin);
        }
        for (size_t c = 0; c < count; c++) total += partial[c];
    }
    return sqrt(total);
}

void grad_scale(float *g, size_t n, float scale) {
    int threads = threads_for(n);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t i = 0; i < n; i++) g[i] *= scale;
}

void grad_clamp(float *g, size_t n, float limit) {
    int threads = threads_for(n);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t i = 0; i < n; i++) {
        if (g[i] > limit) g[i] = limit;
        else if (g[i] < -limit) g[i] = -limit;
    }
}

/* Returns g * scale clamped to [-limit, limit] (limit <= 0: no clamp), the
 * same arithmetic as grad_scale followed by grad_clamp. */
static inline float clipped(float g, float scale, float limit) {
    g *= scale;
    if (limit > 0.0f) g = g > limit ? limit : (g < -limit ? -limit : g);
    return g;
}

/* PyTorch's SGD convention: v = mu*v + (g + wd*p); p -= lr*v. */
CLONE_FOR_ISA
static void sgd_chunk(float lr, float mu, float wd, const grad_clip *clip, float *restrict m,
                      float *restrict p, const float *restrict g, size_t n) {
    float scale = clip->scale, limit = clip->limit;
    for (size_t i = 0; i < n; i++) {
        float d = clipped(g[i], scale, limit) + wd * p[i];
        if (mu > 0.0f) {
            m[i] = mu * m[i] + d;
            d = m[i];
        }
        p[i] -= lr * d;
    }
}

/* Adam with bias correction; weight decay is decoupled as in AdamW:
 * p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p). */
typedef struct adam_scalars {
    float b1, b2, eps, wd, lr, step_size, inv_sqrt_c2;
} adam_scalars;

CLONE_FOR_ISA
static void adam_chunk(const adam_scalars *a, const grad_clip *clip, float *restrict m,
                       float *restrict v, float *restrict p, const float *restrict g,
                       size_t n) {
    float b1 = a->b1, b2 = a->b2, eps = a->eps, wd = a->wd, lr = a->lr;
    float step_size = a->step_size, inv_sqrt_c2 = a->inv_sqrt_c2;
    float scale = clip->scale, limit = clip->limit;
    for (size_t i = 0; i < n; i++) {
        float gi = clipped(g[i], scale, limit);
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float denom = sqrtf(v[i]) * inv_sqrt_c2 + eps;
        p[i] -= step_size * m[i] / denom + lr * wd * p[i];
    }
}

static void sgd_update(const charlstm_train_config *cfg, float lr, const grad_clip *clip,
                       float *m, float *p, const float *g, size_t n) {
    size_t n_chunks = (n + CHUNK - 1) / CHUNK;
    int threads = threads_for(n);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t begin = c * CHUNK, count = n - begin < CHUNK ? n - begin : CHUNK;
        sgd_chunk(lr, cfg->momentum, cfg->weight_decay, clip, m + begin, p + begin, g + begin,
                  count);
    }
}

static void adam_update(const charlstm_train_config *cfg, float lr, int64_t step,
                        const grad_clip *clip, float *m, float *v, float *p, const float *g,
                        size_t n) {
    adam_scalars a = {cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay, lr, 0.0f, 0.0f};
    float c1 = (float)(1.0 - pow((double)a.b1, (double)step));
    float c2 = (float)(1.0 - pow((double)a.b2, (double)step));
    a.step_size = lr / c1;
    a.inv_sqrt_c2 = 1.0f / sqrtf(c2);
    size_t n_chunks = (n + CHUNK - 1) / CHUNK;
    int threads = threads_for(n);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t begin = c * CHUNK, count = n - begin < CHUNK ? n - begin : CHUNK;
        adam_chunk(&a, clip, m + begin, v + begin, p + begin, g + begin, count);
    }
}

void optim_update(const charlstm_train_config *cfg, float lr, const grad_clip *clip,
                  optim_state *st, float *p, const float *g, size_t n) {
    static const grad_clip no_clip = {1.0f, 0.0f};
    if (!clip) clip = &no_clip;
    st->step++;
    if (cfg->optimizer == CHARLSTM_OPTIMIZER_ADAM)
        adam_update(cfg, lr, st->step, clip, st->m, st->v, p, g, n);
    else
        sgd_update(cfg, lr, clip, st->m, p, g, n);
}
