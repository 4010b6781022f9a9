/*
 * charlstm.h - character-level LSTM language models: training and sampling.
 *
 * Overview
 * --------
 * Three opaque handles, each created with *_init and released with *_free:
 *
 *   charlstm_model    the parameters: one contiguous float32 block plus a table
 *                     of named tensors (name, shape, offset) pointing into it.
 *   charlstm_trainer  everything one training run needs for a fixed batch size B
 *                     and sequence length T: gradients, optimizer moments,
 *                     activations, the carried hidden/cell state, the training
 *                     RNG. It borrows its model, which must outlive it.
 *   charlstm_sampler  the state for drawing text one character at a time: its
 *                     own hidden/cell state and its own RNG. It borrows its
 *                     model, which must outlive it.
 *
 * A training step is one call, charlstm_trainer_step(), which does
 *   zero_grad -> forward_backward -> clip -> update
 * The pieces are also exported for tests and custom loops, in that order:
 *   charlstm_trainer_zero_grad, charlstm_trainer_forward_backward,
 *   charlstm_trainer_clip_grad, charlstm_trainer_update.
 *
 * Shapes and names: B batch, T time steps, V vocabulary, H hidden, L layers.
 * Token buffers are int32 of shape (B, T), row-major: row b is stream b.
 * The hidden and cell state is float32 of shape (L, B, H).
 *
 * Model: layer 0 reads a one-hot character, so its input weights are a
 * table of V rows (a row gather, never a V-wide product); layer l > 0 reads
 * layer l-1's hidden output. Per layer l, with D = V for l = 0 and H after:
 *   lstm.l.w_ih  (D, 4H)   input-to-gates weights, row-major
 *   lstm.l.w_hh  (H, 4H)   hidden-to-gates weights, row-major
 *   lstm.l.bias  (4H)
 * then the output projection
 *   out.weight   (H, V)
 *   out.bias     (V)
 * Gate order inside every 4H axis is i, f, o, g (input, forget, output,
 * candidate):
 *   i = sigmoid(a_i)  f = sigmoid(a_f)  o = sigmoid(a_o)  g = tanh(a_g)
 *   c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)
 * Gradients and optimizer moments use the same layout as the parameters.
 *
 * The loss is the mean softmax cross-entropy over all B*T positions, where
 * targets[b][t] is the character that follows inputs[b][t].
 *
 * Errors: every fallible function returns a charlstm_status. Functions on a
 * handle also store a message naming the argument and value at fault, read
 * with *_last_error(). The library never prints, exits or aborts on input a
 * caller passes; assert() guards only internal invariants.
 */
#ifndef CHARLSTM_H
#define CHARLSTM_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(CHARLSTM_BUILD)
#define CHARLSTM_API __declspec(dllexport)
#elif defined(_WIN32)
#define CHARLSTM_API __declspec(dllimport)
#elif defined(CHARLSTM_BUILD)
#define CHARLSTM_API __attribute__((visibility("default")))
#else
#define CHARLSTM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct or a signature below changes. */
#define CHARLSTM_ABI_VERSION 1

typedef enum charlstm_status {
    CHARLSTM_OK = 0,
    CHARLSTM_INVALID_ARG = 1, /* a size, id, option or buffer length is out of range */
    CHARLSTM_NOMEM = 2,       /* an allocation failed */
    CHARLSTM_NONFINITE = 3,   /* the loss or the gradient norm is NaN or infinite */
} charlstm_status;

typedef enum charlstm_optimizer {
    CHARLSTM_OPTIMIZER_SGD = 0,  /* with optional momentum */
    CHARLSTM_OPTIMIZER_ADAM = 1, /* bias-corrected; weight decay decoupled (AdamW) */
} charlstm_optimizer;

typedef struct charlstm_model charlstm_model;
typedef struct charlstm_trainer charlstm_trainer;
typedef struct charlstm_sampler charlstm_sampler;

/* Architecture and initialisation. Fill with charlstm_model_config_default. */
typedef struct charlstm_model_config {
    int32_t n_vocab;   /* V, at least 2 */
    int32_t n_hidden;  /* H, at least 1 */
    int32_t n_layers;  /* L, 1 to CHARLSTM_MAX_LAYERS */
    float forget_bias; /* initial forget-gate bias; other biases start at 0 */
    uint64_t seed;     /* same seed and sizes -> bit-identical parameters */
} charlstm_model_config;

#define CHARLSTM_MAX_LAYERS 8

/* Training options. Fill with charlstm_train_config_default. */
typedef struct charlstm_train_config {
    int32_t batch_size;   /* B, at least 1 */
    int32_t seq_len;      /* T, at least 1 */
    int32_t optimizer;    /* a charlstm_optimizer value */
    float lr;             /* learning rate, > 0 */
    float momentum;       /* SGD momentum in [0, 1); 0 = plain SGD */
    float beta1, beta2;   /* Adam moment decay rates in [0, 1) */
    float eps;            /* Adam denominator term, > 0 */
    float weight_decay;   /* >= 0; SGD adds it to the gradient, Adam decouples it */
    float clip_norm;      /* clip the global gradient norm to this; <= 0 disables */
    float clip_value;     /* clip each gradient element to [-v, v]; <= 0 disables */
    float dropout;        /* inverted dropout on each layer's output, [0, 1) */
    uint64_t seed;        /* training RNG (dropout) */
} charlstm_train_config;

/* One entry of a model's tensor table. */
typedef struct charlstm_tensor_info {
    char name[32];   /* for example "lstm.0.w_ih", NUL-terminated */
    int32_t n_dims;  /* 1 or 2 */
    int32_t shape[2];
    size_t offset;   /* in floats from the start of the parameter block */
    size_t n_elements;
} charlstm_tensor_info;

// ----------------------------------------------------------------------------
// library

/* Returns CHARLSTM_ABI_VERSION as compiled into the library. */
CHARLSTM_API int32_t charlstm_abi_version(void);
/* Returns the charlstm release this library was built from, e.g. "0.1.0". */
CHARLSTM_API const char *charlstm_version(void);
/* Returns sizeof of a public struct by name ("model_config", "train_config",
 * "tensor_info"), or 0 for an unknown name; bindings compare it to theirs. */
CHARLSTM_API size_t charlstm_sizeof(const char *struct_name);
/* Returns a static description of a status, e.g. "invalid argument". */
CHARLSTM_API const char *charlstm_status_str(charlstm_status status);
/* Returns the matrix kernel in use: "avx512", "avx2" or "portable". */
CHARLSTM_API const char *charlstm_kernel_name(void);
/* Forces a kernel path by name, for tests. Returns CHARLSTM_INVALID_ARG for
 * an unknown name or one this processor cannot run. Not thread-safe: call
 * while no other charlstm function runs. */
CHARLSTM_API charlstm_status charlstm_kernel_force(const char *name);
/* Sets the number of threads the kernels use; n <= 0 means all cores. */
CHARLSTM_API void charlstm_set_num_threads(int32_t n);
CHARLSTM_API int32_t charlstm_get_num_threads(void);
/* Measures the fused multiply-add peak in GFLOP/s (1 FMA = 2 FLOP) of n_threads
 * threads (<= 0: charlstm_get_num_threads()), with the instruction set of the
 * kernel path in use, for benchmarks to compare achieved GFLOP/s against. Runs
 * for about `seconds` of wall time (at least 1 ms) and returns the best of 3
 * repetitions. A diagnostic: nothing else in the library calls it. */
CHARLSTM_API double charlstm_measure_peak_gflops(int32_t n_threads, double seconds);

// ----------------------------------------------------------------------------
// model

CHARLSTM_API void charlstm_model_config_default(charlstm_model_config *cfg);

/* Allocates a model and initialises it: Xavier/Glorot uniform weights drawn
 * from cfg->seed, zero biases, forget-gate bias cfg->forget_bias. On success
 * *out is a new handle that the caller frees with charlstm_model_free. On
 * failure *out is NULL and, because there is no handle to carry a message,
 * charlstm_last_init_error() describes the fault. */
CHARLSTM_API charlstm_status charlstm_model_init(const charlstm_model_config *cfg,
                                                 charlstm_model **out);
CHARLSTM_API void charlstm_model_free(charlstm_model *model);
/* Returns the message of the latest failed *_init call on this thread. */
CHARLSTM_API const char *charlstm_last_init_error(void);

CHARLSTM_API void charlstm_model_get_config(const charlstm_model *model,
                                            charlstm_model_config *cfg);
CHARLSTM_API size_t charlstm_model_n_params(const charlstm_model *model);
/* Returns the parameter block, n_params floats, owned by the model. Callers
 * may read and write it between calls, for example to load a checkpoint. */
CHARLSTM_API float *charlstm_model_params(charlstm_model *model);
CHARLSTM_API int32_t charlstm_model_n_tensors(const charlstm_model *model);
/* Fills *info for tensor `index` in [0, n_tensors). */
CHARLSTM_API charlstm_status charlstm_model_tensor_info(const charlstm_model *model,
                                                        int32_t index,
                                                        charlstm_tensor_info *info);

// ----------------------------------------------------------------------------
// trainer

CHARLSTM_API void charlstm_train_config_default(charlstm_train_config *cfg);

/* Allocates every buffer a training step needs for cfg's B and T, so that no
 * step allocates. The carried state starts at zero and the step count at 0.
 * Caller frees with charlstm_trainer_free, before freeing the model. */
CHARLSTM_API charlstm_status charlstm_trainer_init(charlstm_model *model,
                                                   const charlstm_train_config *cfg,
                                                   charlstm_trainer **out);
CHARLSTM_API void charlstm_trainer_free(charlstm_trainer *trainer);
CHARLSTM_API const char *charlstm_trainer_last_error(const charlstm_trainer *trainer);

/* Changes the learning rate for later updates (schedules call this). */
CHARLSTM_API charlstm_status charlstm_trainer_set_lr(charlstm_trainer *trainer, float lr);
CHARLSTM_API float charlstm_trainer_get_lr(const charlstm_trainer *trainer);

/* Runs one whole training step on inputs and targets, both (B, T) token ids
 * of n = B*T elements: zero the gradients, forward, backward through all T
 * steps and L layers, clip, update the parameters, and carry the final
 * hidden/cell state to the next call. Writes the mean loss to *loss and the
 * pre-clip global gradient norm to *grad_norm (either may be NULL). Returns
 * CHARLSTM_NONFINITE, with the parameters left unchanged, when the loss or
 * gradient norm is not finite. The parameters end up bit-identical to the
 * separate calls, but the gradient buffer keeps the unclipped gradients,
 * because clipping is applied inside the update. */
CHARLSTM_API charlstm_status charlstm_trainer_step(charlstm_trainer *trainer,
                                                   const int32_t *inputs,
                                                   const int32_t *targets, size_t n,
                                                   float *loss, float *grad_norm);

/* Sets every gradient, including those of the initial state, to zero. */
CHARLSTM_API void charlstm_trainer_zero_grad(charlstm_trainer *trainer);
/* Forward and backward without an update: accumulates (+=) the parameter
 * gradients, overwrites the initial-state gradients, writes the mean loss,
 * and carries the final state forward. No dropout is applied unless the
 * config enables it. */
CHARLSTM_API charlstm_status charlstm_trainer_forward_backward(charlstm_trainer *trainer,
                                                               const int32_t *inputs,
                                                               const int32_t *targets,
                                                               size_t n, float *loss);
/* Applies the configured clipping (global norm, then element-wise) and
 * writes the pre-clip global norm to *grad_norm (may be NULL). */
CHARLSTM_API charlstm_status charlstm_trainer_clip_grad(charlstm_trainer *trainer,
                                                        float *grad_norm);
/* Applies one optimizer update from the current gradients. */
CHARLSTM_API void charlstm_trainer_update(charlstm_trainer *trainer);

/* Forward only, on the separate evaluation state (carried between calls like
 * the training state), without dropout or updates. Adds the summed loss to
 * *loss_sum and the number of positions whose argmax equals the target to
 * *n_correct. */
CHARLSTM_API charlstm_status charlstm_trainer_evaluate(charlstm_trainer *trainer,
                                                       const int32_t *inputs,
                                                       const int32_t *targets, size_t n,
                                                       double *loss_sum,
                                                       int64_t *n_correct);

/* Zeroes the carried training state (h and c of every layer and stream). */
CHARLSTM_API void charlstm_trainer_reset_state(charlstm_trainer *trainer);
/* Zeroes the carried evaluation state. */
CHARLSTM_API void charlstm_trainer_reset_eval_state(charlstm_trainer *trainer);

/* Buffers owned by the trainer, valid until charlstm_trainer_free. Callers
 * may read and write them between calls (checkpoints save and restore them).
 *   grads, moment1, moment2: n_params floats each, laid out like the params.
 *     moment1 is SGD's velocity or Adam's first moment; moment2 Adam's second.
 *   state_h, state_c: the carried training state, (L, B, H).
 *   dstate_h, dstate_c: gradient of the loss of the last forward_backward
 *     with respect to the state it started from, (L, B, H). */
CHARLSTM_API float *charlstm_trainer_grads(charlstm_trainer *trainer);
CHARLSTM_API float *charlstm_trainer_moment1(charlstm_trainer *trainer);
CHARLSTM_API float *charlstm_trainer_moment2(charlstm_trainer *trainer);
CHARLSTM_API float *charlstm_trainer_state_h(charlstm_trainer *trainer);
CHARLSTM_API float *charlstm_trainer_state_c(charlstm_trainer *trainer);
CHARLSTM_API float *charlstm_trainer_dstate_h(charlstm_trainer *trainer);
CHARLSTM_API float *charlstm_trainer_dstate_c(charlstm_trainer *trainer);

/* The number of updates applied so far (Adam's bias correction uses it). */
CHARLSTM_API int64_t charlstm_trainer_get_step(const charlstm_trainer *trainer);
CHARLSTM_API void charlstm_trainer_set_step(charlstm_trainer *trainer, int64_t step);
/* Reads or restores the training RNG state: 4 uint64 words. */
CHARLSTM_API void charlstm_trainer_get_rng(const charlstm_trainer *trainer, uint64_t out[4]);
CHARLSTM_API void charlstm_trainer_set_rng(charlstm_trainer *trainer, const uint64_t in[4]);

// ----------------------------------------------------------------------------
// sampler

/* Creates a sampler with zero state and an RNG seeded from `seed`, separate
 * from any trainer's RNG. Caller frees with charlstm_sampler_free, before
 * freeing the model. */
CHARLSTM_API charlstm_status charlstm_sampler_init(const charlstm_model *model,
                                                   uint64_t seed,
                                                   charlstm_sampler **out);
CHARLSTM_API void charlstm_sampler_free(charlstm_sampler *sampler);
CHARLSTM_API const char *charlstm_sampler_last_error(const charlstm_sampler *sampler);
/* Zeroes the state and discards the last logits. */
CHARLSTM_API void charlstm_sampler_reset(charlstm_sampler *sampler);
/* Runs `n` tokens through the model, updating the state; afterwards the
 * logits predict the character after the last one fed. Each call takes a
 * snapshot of the model's weights that later charlstm_sampler_generate
 * calls use, so feed again after changing the parameters. */
CHARLSTM_API charlstm_status charlstm_sampler_feed(charlstm_sampler *sampler,
                                                   const int32_t *tokens, size_t n);
/* Draws `n` characters into out[0..n), feeding each back in. Needs at least
 * one token fed since the last reset. temperature 0 picks the argmax; top_k
 * <= 0 disables top-k; top_p >= 1 disables nucleus filtering. */
CHARLSTM_API charlstm_status charlstm_sampler_generate(charlstm_sampler *sampler,
                                                       size_t n, float temperature,
                                                       int32_t top_k, float top_p,
                                                       int32_t *out);
/* Returns the V logits that predict the next character, borrowed until the
 * next call on this sampler, or NULL when nothing has been fed. */
CHARLSTM_API const float *charlstm_sampler_logits(const charlstm_sampler *sampler);
CHARLSTM_API void charlstm_sampler_get_rng(const charlstm_sampler *sampler, uint64_t out[4]);
CHARLSTM_API void charlstm_sampler_set_rng(charlstm_sampler *sampler, const uint64_t in[4]);

/* Picks one index from n logits with the given filters, using the uniform
 * draw u in [0, 1) as the only randomness, so tests can drive it. `work` is
 * scratch of 2*n floats plus n int32 the caller provides (NULL: the
 * function fails with CHARLSTM_INVALID_ARG). */
CHARLSTM_API charlstm_status charlstm_sample_logits(const float *logits, int32_t n,
                                                    float temperature, int32_t top_k,
                                                    float top_p, float u, float *work,
                                                    int32_t *work_index, int32_t *out);

#ifdef __cplusplus
}
#endif

#endif /* CHARLSTM_H */
