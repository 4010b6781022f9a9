/* Multi-layer LSTM forward and backward over a (T, B) batch. */
#ifndef CHARLSTM_LSTM_H
#define CHARLSTM_LSTM_H

#include "internal.h"

/* Activations kept from forward for backward; every buffer is time-major. */
typedef struct lstm_buffers {
    int B, T;
    int32_t *inputs;                   /* (T, B) token ids */
    int32_t *targets;                  /* (T, B) */
    float *gates[CHARLSTM_MAX_LAYERS]; /* (T, B, 4H) activated i, f, o, g */
    float *h[CHARLSTM_MAX_LAYERS];     /* (T+1, B, H); slot 0 is the initial state */
    float *c[CHARLSTM_MAX_LAYERS];     /* (T+1, B, H) */
    float *tanh_c[CHARLSTM_MAX_LAYERS];/* (T, B, H) */
    float *mask[CHARLSTM_MAX_LAYERS];  /* (T, B, H) dropout scale 0 or 1/(1-p); NULL without dropout */
    float *dropped[CHARLSTM_MAX_LAYERS]; /* (T, B, H) layer output after dropout, or NULL */
    float *logits;                     /* (T, B, V); softmax, then dlogits, after backward */
    float *dout;                       /* (T, B, H) gradient of the current layer's output */
    float *dpre;                       /* (T, B, 4H) gradient of gate pre-activations */
    float *dh_rec;                     /* (B, H) gradient from step t+1 */
    float *dc;                         /* (B, H) */
    float *block_sums;                 /* (ceil(B/CELL_BLOCK_ROWS), 4H) bias sums of row blocks */
    float *packed;                     /* w_hh packed for the per-step products */
    float *row_loss;                   /* (T*B) loss of each position */
} lstm_buffers;

struct charlstm_trainer {
    charlstm_model *model;
    charlstm_train_config cfg;
    float lr;
    rng_state rng;
    lstm_buffers buf;
    float *grads;              /* n_params */
    optim_state opt;
    float *state_h, *state_c;  /* (L, B, H) carried training state */
    float *eval_h, *eval_c;    /* (L, B, H) carried evaluation state */
    float *dstate_h, *dstate_c;/* (L, B, H) */
    char error[CHARLSTM_ERROR_SIZE];
};

/* Returns 1 on success, 0 when an allocation failed (buffers then freeable). */
int lstm_buffers_alloc(lstm_buffers *buf, const charlstm_model_config *mc, int B, int T,
                       int with_dropout);
void lstm_buffers_free(lstm_buffers *buf);

/* Runs all layers over buf->inputs from the state (L, B, H) in h0/c0 and
 * returns the summed cross-entropy over buf->targets. With `for_backward`,
 * leaves softmax probabilities in buf->logits; with dropout > 0 draws masks
 * from rng. When n_correct is not NULL, counts argmax hits. */
double lstm_forward(lstm_buffers *buf, const charlstm_model_config *mc, const lstm_weights *w,
                    const float *h0, const float *c0, float dropout, rng_state *rng,
                    int for_backward, int64_t *n_correct);
/* Backpropagates the mean loss of the last forward through all T steps and L
 * layers: adds the parameter gradients to dw (accumulate = 1) or overwrites
 * dw with them (accumulate = 0), and writes dL/dh0 and dL/dc0. */
void lstm_backward(lstm_buffers *buf, const charlstm_model_config *mc, const lstm_weights *w,
                   const lstm_weights *dw, float *dh0, float *dc0, int accumulate);
/* Copies the final state of the last forward into h/c (L, B, H). */
void lstm_carry_state(const lstm_buffers *buf, const charlstm_model_config *mc, float *h,
                      float *c);

#endif /* CHARLSTM_LSTM_H */
