/* Internal declarations shared by the library's source files. */
#ifndef CHARLSTM_INTERNAL_H
#define CHARLSTM_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "charlstm.h"

#define CHARLSTM_ERROR_SIZE 256

// ----------------------------------------------------------------------------
// random numbers: xoshiro256** seeded through splitmix64

typedef struct rng_state {
    uint64_t s[4];
} rng_state;

void rng_seed(rng_state *rng, uint64_t seed);
uint64_t rng_next(rng_state *rng);
/* Returns a float uniform in [0, 1) with 24 random bits. */
float rng_uniform(rng_state *rng);

// ----------------------------------------------------------------------------
// errors and memory

/* Formats a message into dst (CHARLSTM_ERROR_SIZE bytes) and returns status. */
charlstm_status set_error(char *dst, charlstm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, for the thread-local message of a failed *_init call. */
charlstm_status set_init_error(charlstm_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Allocates n floats aligned to 64 bytes and zeroed, or returns NULL. */
float *alloc_floats(size_t n);
void free_floats(float *p);

// ----------------------------------------------------------------------------
// model

/* Pointers into the parameter (or gradient, or moment) block for one layout. */
typedef struct lstm_weights {
    float *w_ih[CHARLSTM_MAX_LAYERS]; /* (D, 4H), D = V for layer 0, else H */
    float *w_hh[CHARLSTM_MAX_LAYERS]; /* (H, 4H) */
    float *bias[CHARLSTM_MAX_LAYERS]; /* (4H) */
    float *out_w;                     /* (H, V) */
    float *out_b;                     /* (V) */
} lstm_weights;

struct charlstm_model {
    charlstm_model_config cfg;
    size_t n_params;
    float *params;
    int32_t n_tensors;
    charlstm_tensor_info tensors[3 * CHARLSTM_MAX_LAYERS + 2];
};

/* Points w at the tensors of `block`, a buffer laid out like model->params. */
void model_weights_view(const charlstm_model *model, float *block, lstm_weights *w);

// ----------------------------------------------------------------------------
// LSTM cell kernels (cell.c)

/* The cell kernels run on the calling thread, so callers split the rows. */

/* Adds the bias (4H) to the pre-activations (B, 4H), turns them into
 * activated gates in place and steps the cell: c_next = f*c_prev + i*g,
 * h_next = o*tanh(c_next). c_prev and c_next must not overlap. */
void lstm_cell_forward(int B, int H, float *gates, const float *bias, const float *c_prev,
                       float *c_next, float *h_next, float *tanh_c);
/* Steps the cell like lstm_cell_forward, after adding row tokens[b] of w_in
 * (V, 4H) to row b of the pre-activations. This is the one-hot layer's input
 * product done as a row gather. With w_in NULL it is lstm_cell_forward. */
void lstm_cell_forward_input(int B, int H, float *gates, const float *w_in,
                             const int32_t *tokens, const float *bias, const float *c_prev,
                             float *c_next, float *h_next, float *tanh_c);
/* Rows per block of the bias gradient's partial sums in lstm_cell_backward. */
#define CELL_BLOCK_ROWS 8

/* Inverts lstm_cell_forward for one step. dh_out (B,H) is the gradient
 * arriving from the layer above, dh_rec (B,H) the one from step t+1;
 * dc (B,H) enters as dL/dc_t and leaves as dL/dc_{t-1}. Writes dpre (B,4H)
 * and adds row b of it to row b / CELL_BLOCK_ROWS of block_sums (4H per
 * row), so each block of rows sums in row order. */
void lstm_cell_backward(int B, int H, const float *gates, const float *c_prev,
                        const float *tanh_c, const float *dh_out, const float *dh_rec,
                        float *dc, float *dpre, float *block_sums);

// ----------------------------------------------------------------------------
// optimizer (optim.c)

typedef struct optim_state {
    float *m;     /* SGD velocity or Adam first moment, n floats */
    float *v;     /* Adam second moment, n floats */
    int64_t step; /* updates applied so far */
} optim_state;

/* Clipping applied on the fly by optim_update: each gradient element is
 * multiplied by `scale`, then clamped to [-limit, limit] when limit > 0. */
typedef struct grad_clip {
    float scale;
    float limit;
} grad_clip;

double grad_global_norm(const float *g, size_t n);
void grad_scale(float *g, size_t n, float scale);
void grad_clamp(float *g, size_t n, float limit);
/* Applies one SGD or Adam update to p from g (clipped by `clip`, which may be
 * NULL), and advances st->step. */
void optim_update(const charlstm_train_config *cfg, float lr, const grad_clip *clip,
                  optim_state *st, float *p, const float *g, size_t n);

#endif /* CHARLSTM_INTERNAL_H */
