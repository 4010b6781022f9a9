/* Multi-layer LSTM forward and full backpropagation through time.
 *
 * Per layer, forward does the input-to-gates product for all T steps in one
 * matrix product, then the recurrence does only h_{t-1} @ w_hh per step.
 * Backward runs the recurrence in reverse, then forms the weight gradients
 * as one product over the whole sequence. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm.h"
#include "lstm.h"

// Batch rows from which the recurrence packs w_hh (or w_hh^T) once per
// sequence; below it the matrix-vector kernels read w_hh in place. An
// estimate from profiling batch 1, not a tuned value.
#define MIN_ROWS_PACKED 4

/* Minimum batch rows per thread when the time loop splits the batch over
 * threads (see recurrence_threads). */
#define MIN_ROWS_PER_THREAD 16

int lstm_buffers_alloc(lstm_buffers *buf, const charlstm_model_config *mc, int B, int T,
                       int with_dropout) {
    memset(buf, 0, sizeof *buf);
    buf->B = B;
    buf->T = T;
    size_t H = (size_t)mc->n_hidden, V = (size_t)mc->n_vocab, TB = (size_t)T * B;
    buf->inputs = (int32_t *)alloc_floats(TB);
    buf->targets = (int32_t *)alloc_floats(TB);
    int ok = buf->inputs && buf->targets;
    for (int l = 0; l < mc->n_layers && ok; l++) {
        buf->gates[l] = alloc_floats(TB * 4 * H);
        buf->h[l] = alloc_floats((TB + B) * H);
        buf->c[l] = alloc_floats((TB + B) * H);
        buf->tanh_c[l] = alloc_floats(TB * H);
        ok = buf->gates[l] && buf->h[l] && buf->c[l] && buf->tanh_c[l];
        if (ok && with_dropout) {
            buf->mask[l] = alloc_floats(TB * H);
            buf->dropped[l] = alloc_floats(TB * H);
            ok = buf->mask[l] && buf->dropped[l];
        }
    }
    if (!ok) return 0;
    buf->logits = alloc_floats(TB * V);
    buf->dout = alloc_floats(TB * H);
    buf->dpre = alloc_floats(TB * 4 * H);
    buf->dh_rec = alloc_floats((size_t)B * H);
    buf->dc = alloc_floats((size_t)B * H);
    buf->block_sums = alloc_floats((size_t)(B + CELL_BLOCK_ROWS - 1) / CELL_BLOCK_ROWS * 4 * H);
    size_t forward_bytes = charlstm_gemm_pack_b_size((int)H, (int)(4 * H));
    size_t backward_bytes = charlstm_gemm_pack_bt_size((int)(4 * H), (int)H);
    size_t packed_bytes = forward_bytes > backward_bytes ? forward_bytes : backward_bytes;
    buf->packed = alloc_floats(packed_bytes / sizeof(float) + 1);
    buf->row_loss = alloc_floats(TB);
    return buf->logits && buf->dout && buf->dpre && buf->dh_rec && buf->dc && buf->block_sums &&
           buf->packed && buf->row_loss;
}

void lstm_buffers_free(lstm_buffers *buf) {
    free_floats((float *)buf->inputs);
    free_floats((float *)buf->targets);
    for (int l = 0; l < CHARLSTM_MAX_LAYERS; l++) {
        free_floats(buf->gates[l]);
        free_floats(buf->h[l]);
        free_floats(buf->c[l]);
        free_floats(buf->tanh_c[l]);
        free_floats(buf->mask[l]);
        free_floats(buf->dropped[l]);
    }
    free_floats(buf->logits);
    free_floats(buf->dout);
    free_floats(buf->dpre);
    free_floats(buf->dh_rec);
    free_floats(buf->dc);
    free_floats(buf->block_sums);
    free_floats(buf->packed);
    free_floats(buf->row_loss);
    memset(buf, 0, sizeof *buf);
}

/* Returns the thread count for an elementwise pass over n floats: one thread
 * below about 32k elements, where starting a parallel region costs more. */
static int threads_for(size_t n) {
    return n >= 32768 ? charlstm_get_num_threads() : 1;
}

/* Returns the thread count for one cell step over n = B*H elements. A cell
 * step does several times the work per element of a plain pass, so it
 * starts threads from a smaller n. */
static int cell_threads_for(size_t n) {
    return n >= 8192 ? charlstm_get_num_threads() : 1;
}

/* Packed recurrent weights up to this size stay in the L2 cache of each core
 * (2 MiB per core on the development machine), so every thread of a split
 * batch can read all of them at each step.
 * NOTE: a fixed size, not read from the processor; on cores with 1 MiB of L2
 * the weights of H = 256 would not stay in cache. */
#define CACHED_WEIGHT_BYTES ((size_t)1 << 20)
/* Minimum rows per thread when larger weights are read from the shared cache
 * at each step, which is 32 FLOP per byte of weights. On 2 x 512 models, 32
 * rows per thread measured 3% slower than splitting each product's columns,
 * and 64 rows 2% faster. */
#define MIN_ROWS_STREAMING 64

/* Returns how many threads run a layer's time loop, each on its own batch
 * rows. It returns 1 when each step should instead split its products by
 * columns and its cell by rows. Threads with their own rows meet once per
 * layer instead of several times per step, which measured 6 to 10% faster
 * for 2 x 256 models with batch 32 and 64 on 2 cores. Both ways sum in the
 * same order, so the choice does not change the results. */
static int recurrence_threads(int B, int H) {
    int threads = charlstm_get_num_threads();
    size_t weight_bytes = 16 * (size_t)H * H;
    int min_rows = weight_bytes <= CACHED_WEIGHT_BYTES ? MIN_ROWS_PER_THREAD : MIN_ROWS_STREAMING;
    int max_threads = B / min_rows;
    if (threads > max_threads) threads = max_threads;
    return threads > 1 ? threads : 1;
}

/* Sets [*first, *end) to the batch rows of thread `index` of `count`. The
 * rows are whole blocks of CELL_BLOCK_ROWS, so each block's bias sums belong
 * to one thread. Since MIN_ROWS_PER_THREAD >= CELL_BLOCK_ROWS, every thread
 * gets at least 2 rows, which its products need to sum in the same order as
 * for the whole batch (see gemm.h). */
static void thread_rows(int B, int index, int count, int *first, int *end) {
    int blocks = (B + CELL_BLOCK_ROWS - 1) / CELL_BLOCK_ROWS;
    *first = blocks * index / count * CELL_BLOCK_ROWS;
    int stop = blocks * (index + 1) / count * CELL_BLOCK_ROWS;
    *end = stop < B ? stop : B;
}

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Returns the (T*B, H) tensor that layer l passes upward. */
static const float *layer_output(const lstm_buffers *buf, int l, int H) {
    if (buf->dropped[l]) return buf->dropped[l];
    return buf->h[l] + (size_t)buf->B * H;
}

// ----------------------------------------------------------------------------
// forward

static void apply_dropout(lstm_buffers *buf, int l, int H, float p, rng_state *rng) {
    size_t n = (size_t)buf->T * buf->B * H;
    const float *h = buf->h[l] + (size_t)buf->B * H;
    float keep_scale = 1.0f / (1.0f - p);
    for (size_t k = 0; k < n; k++) {
        buf->mask[l][k] = rng_uniform(rng) < p ? 0.0f : keep_scale;
        buf->dropped[l][k] = h[k] * buf->mask[l][k];
    }
}

/* Softmax cross-entropy of each (T*B) row. Leaves probabilities in place
 * when `keep_probs`, and returns the summed loss. */
static double softmax_loss(lstm_buffers *buf, int V, int keep_probs, int64_t *n_correct) {
    size_t TB = (size_t)buf->T * buf->B;
    int64_t correct = 0;
    int threads = threads_for(TB * (size_t)V);
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : correct) \
    if (threads > 1)
    for (size_t r = 0; r < TB; r++) {
        float *z = buf->logits + r * V;
        int best = 0;
        for (int k = 1; k < V; k++)
            if (z[k] > z[best]) best = k;
        float maxv = z[best];
        double sum = 0.0;
        for (int k = 0; k < V; k++) sum += exp((double)(z[k] - maxv));
        int y = buf->targets[r];
        buf->row_loss[r] = (float)(log(sum) - (double)(z[y] - maxv));
        correct += best == y;
        if (keep_probs) {
            float inv = (float)(1.0 / sum);
            for (int k = 0; k < V; k++) z[k] = expf(z[k] - maxv) * inv;
        }
    }
    // summed serially so the total does not depend on the thread count
    double total = 0.0;
    for (size_t r = 0; r < TB; r++) total += buf->row_loss[r];
    if (n_correct) *n_correct = correct;
    return total;
}

/* Runs the cell of step t of layer l on the rows of one block: up to
 * CELL_BLOCK_ROWS batch rows from b0, stopping before `end`. */
static void forward_cell_block(lstm_buffers *buf, int l, int t, int H, const lstm_weights *w,
                               const float *w_gather, int b0, int end) {
    int B = buf->B;
    size_t BH = (size_t)B * H, G = 4 * (size_t)H, at = (size_t)b0 * H;
    int n = end - b0 < CELL_BLOCK_ROWS ? end - b0 : CELL_BLOCK_ROWS;
    lstm_cell_forward_input(n, H, buf->gates[l] + ((size_t)t * B + b0) * G, w_gather,
                            buf->inputs + (size_t)t * B + b0, w->bias[l],
                            buf->c[l] + (size_t)t * BH + at, buf->c[l] + (size_t)(t + 1) * BH + at,
                            buf->h[l] + (size_t)(t + 1) * BH + at,
                            buf->tanh_c[l] + (size_t)t * BH + at);
}

/* Runs step t of layer l for batch rows [first, end): the recurrent product,
 * then the cell on cell_threads threads. The cell adds the bias and, for the
 * one-hot layer 0 (w_gather not NULL), the token's row of w_ih. */
static void forward_step(lstm_buffers *buf, int l, int t, int H, const lstm_weights *w,
                         const float *w_gather, int use_packed, int first, int end,
                         int cell_threads) {
    int B = buf->B, rows = end - first;
    size_t BH = (size_t)B * H, G = 4 * (size_t)H;
    float *pre = buf->gates[l] + ((size_t)t * B + first) * G;
    const float *h_prev = buf->h[l] + (size_t)t * BH + (size_t)first * H;
    int accumulate = w_gather == NULL;
    if (use_packed)
        charlstm_gemm_nn_packed(rows, (int)G, H, h_prev, H, buf->packed, pre, (int)G, accumulate);
    else
        charlstm_gemm_nn(rows, (int)G, H, h_prev, H, w->w_hh[l], (int)G, pre, (int)G, accumulate);
    int n_blocks = (rows + CELL_BLOCK_ROWS - 1) / CELL_BLOCK_ROWS;
    if (cell_threads > 1) {
#pragma omp parallel for num_threads(cell_threads) schedule(static)
        for (int block = 0; block < n_blocks; block++)
            forward_cell_block(buf, l, t, H, w, w_gather, first + block * CELL_BLOCK_ROWS, end);
    } else {
        for (int block = 0; block < n_blocks; block++)
            forward_cell_block(buf, l, t, H, w, w_gather, first + block * CELL_BLOCK_ROWS, end);
    }
}

/* Runs the recurrence of layer l over all T steps, either on threads that
 * each take their own batch rows or with each step's work split over the
 * threads (see recurrence_threads). */
static void layer_forward_time(lstm_buffers *buf, int l, int H, const lstm_weights *w,
                               const float *w_gather, int use_packed) {
    int B = buf->B, T = buf->T;
    int threads = recurrence_threads(B, H);
    if (threads == 1) {
        int cell_threads = cell_threads_for((size_t)B * H);
        for (int t = 0; t < T; t++)
            forward_step(buf, l, t, H, w, w_gather, use_packed, 0, B, cell_threads);
        return;
    }
    charlstm_kernels_init(); // before the threads call products at once
#pragma omp parallel num_threads(threads)
    {
        int first, end;
        thread_rows(B, thread_index(), thread_count(), &first, &end);
        for (int t = 0; t < T; t++)
            forward_step(buf, l, t, H, w, w_gather, use_packed, first, end, 1);
    }
}

double lstm_forward(lstm_buffers *buf, const charlstm_model_config *mc, const lstm_weights *w,
                    const float *h0, const float *c0, float dropout, rng_state *rng,
                    int for_backward, int64_t *n_correct) {
    int B = buf->B, T = buf->T, H = mc->n_hidden, V = mc->n_vocab;
    size_t TB = (size_t)T * B, BH = (size_t)B * H, G = 4 * (size_t)H;
    int use_dropout = for_backward && dropout > 0.0f && buf->mask[0];

    const float *x = NULL;
    for (int l = 0; l < mc->n_layers; l++) {
        memcpy(buf->h[l], h0 + l * BH, BH * sizeof(float));
        memcpy(buf->c[l], c0 + l * BH, BH * sizeof(float));

        // The input part of the pre-activations is one product over all T
        // steps for upper layers. Layer 0 reads a one-hot character, so the
        // cell adds that character's row of w_ih together with the bias.
        int has_input_gates = l > 0;
        if (has_input_gates)
            charlstm_gemm_nn((int)TB, (int)G, H, x, H, w->w_ih[l], (int)G, buf->gates[l],
                             (int)G, 0);
        const float *w_gather = has_input_gates ? NULL : w->w_ih[0];

        // recurrence: only h_{t-1} @ w_hh is left inside the time loop, and
        // w_hh is packed once for all T products
        int use_packed = B >= MIN_ROWS_PACKED;
        if (use_packed) charlstm_gemm_pack_b(H, (int)G, w->w_hh[l], (int)G, buf->packed);
        layer_forward_time(buf, l, H, w, w_gather, use_packed);
        if (use_dropout) apply_dropout(buf, l, H, dropout, rng);
        x = use_dropout ? buf->dropped[l] : buf->h[l] + BH;
    }

    // output projection and loss over all T*B positions at once
    charlstm_gemm_nn((int)TB, V, H, x, H, w->out_w, V, buf->logits, V, 0);
    int threads = threads_for(TB * (size_t)V);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t r = 0; r < TB; r++)
        for (int k = 0; k < V; k++) buf->logits[r * V + k] += w->out_b[k];
    return softmax_loss(buf, V, for_backward, n_correct);
}

void lstm_carry_state(const lstm_buffers *buf, const charlstm_model_config *mc, float *h,
                      float *c) {
    size_t BH = (size_t)buf->B * mc->n_hidden;
    for (int l = 0; l < mc->n_layers; l++) {
        memcpy(h + l * BH, buf->h[l] + (size_t)buf->T * BH, BH * sizeof(float));
        memcpy(c + l * BH, buf->c[l] + (size_t)buf->T * BH, BH * sizeof(float));
    }
}

// ----------------------------------------------------------------------------
// backward

/* d(mean loss)/dlogits = (softmax - onehot) / (T*B), in place. */
static void softmax_loss_backward(lstm_buffers *buf, int V) {
    size_t TB = (size_t)buf->T * buf->B;
    float scale = 1.0f / (float)TB;
    int threads = threads_for(TB * (size_t)V);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t r = 0; r < TB; r++) {
        float *p = buf->logits + r * V;
        p[buf->targets[r]] -= 1.0f;
        for (int k = 0; k < V; k++) p[k] *= scale;
    }
}

/* Columns per chunk when threads split a column-wise pass. */
#define COLUMN_CHUNK 64

/* out[j] (+)= sum over rows of m[r][j]; threads split the columns, so every
 * sum runs in row order whatever the thread count. */
static void add_column_sums(const float *m, size_t rows, size_t cols, float *out,
                            int accumulate) {
    int threads = threads_for(rows * cols);
    size_t n_chunks = (cols + COLUMN_CHUNK - 1) / COLUMN_CHUNK;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t chunk = 0; chunk < n_chunks; chunk++) {
        size_t j0 = chunk * COLUMN_CHUNK;
        size_t j1 = j0 + COLUMN_CHUNK < cols ? j0 + COLUMN_CHUNK : cols;
        if (!accumulate)
            for (size_t j = j0; j < j1; j++) out[j] = 0.0f;
        for (size_t r = 0; r < rows; r++)
            for (size_t j = j0; j < j1; j++) out[j] += m[r * cols + j];
    }
}

/* Adds row b of dpre_t to row tokens_t[b] of dw_gather (V, 4H) for rows
 * [first, end) and columns [j0, j1). */
static void scatter_rows(const float *dpre_t, const int32_t *tokens_t, int first, int end,
                         size_t G, size_t j0, size_t j1, float *dw_gather) {
    for (int b = first; b < end; b++) {
        float *row = dw_gather + (size_t)tokens_t[b] * G;
        const float *d = dpre_t + (size_t)b * G;
        for (size_t j = j0; j < j1; j++) row[j] += d[j];
    }
}

/* Runs the backward cell of step t of layer l on one block of up to
 * CELL_BLOCK_ROWS batch rows from b0, and adds them to the block's bias sums. */
static void backward_cell_block(lstm_buffers *buf, int l, int t, int H, int b0, int end) {
    int B = buf->B;
    size_t BH = (size_t)B * H, G = 4 * (size_t)H, at = (size_t)b0 * H;
    int n = end - b0 < CELL_BLOCK_ROWS ? end - b0 : CELL_BLOCK_ROWS;
    lstm_cell_backward(n, H, buf->gates[l] + ((size_t)t * B + b0) * G,
                       buf->c[l] + (size_t)t * BH + at, buf->tanh_c[l] + (size_t)t * BH + at,
                       buf->dout + (size_t)t * BH + at, buf->dh_rec + at, buf->dc + at,
                       buf->dpre + ((size_t)t * B + b0) * G,
                       buf->block_sums + (size_t)(b0 / CELL_BLOCK_ROWS) * G);
}

/* Runs step t of layer l backward for batch rows [first, end): the cell
 * writes dpre_t, then dh_{t-1} = dpre_t @ w_hh^T. A non-NULL dw_gather
 * receives the step's rows here (only with cell_threads > 1), else
 * add_gate_gradients scatters them after the loop. */
static void backward_step(lstm_buffers *buf, int l, int t, int H, const lstm_weights *w,
                          int use_packed, int first, int end, int cell_threads,
                          float *dw_gather) {
    int B = buf->B, rows = end - first;
    size_t G = 4 * (size_t)H;
    float *dpre_t = buf->dpre + (size_t)t * B * G;
    int n_blocks = (rows + CELL_BLOCK_ROWS - 1) / CELL_BLOCK_ROWS;
    size_t n_chunks = (G + COLUMN_CHUNK - 1) / COLUMN_CHUNK;
    if (cell_threads > 1) {
#pragma omp parallel num_threads(cell_threads)
        {
#pragma omp for schedule(static)
            for (int block = 0; block < n_blocks; block++)
                backward_cell_block(buf, l, t, H, first + block * CELL_BLOCK_ROWS, end);
            if (dw_gather) {
#pragma omp for schedule(static)
                for (size_t chunk = 0; chunk < n_chunks; chunk++) {
                    size_t j0 = chunk * COLUMN_CHUNK;
                    size_t j1 = j0 + COLUMN_CHUNK < G ? j0 + COLUMN_CHUNK : G;
                    scatter_rows(dpre_t, buf->inputs + (size_t)t * B, first, end, G, j0, j1,
                                 dw_gather);
                }
            }
        }
    } else {
        for (int block = 0; block < n_blocks; block++)
            backward_cell_block(buf, l, t, H, first + block * CELL_BLOCK_ROWS, end);
    }
    float *dpre = dpre_t + (size_t)first * G, *dh = buf->dh_rec + (size_t)first * H;
    if (use_packed)
        charlstm_gemm_nt_packed(rows, H, (int)G, dpre, (int)G, buf->packed, dh, H, 0);
    else
        charlstm_gemm_nt(rows, H, (int)G, dpre, (int)G, w->w_hh[l], (int)G, dh, H, 0);
}

/* Adds the block sums to dbias in block order and, when dw_gather is not
 * NULL, scatters every step's dpre rows into it, in the order backward_step
 * does (steps from last to first, rows in order). Threads split the columns,
 * so every sum runs in the same order whatever the thread count. */
static void add_gate_gradients(const lstm_buffers *buf, size_t G, float *dbias,
                               float *dw_gather) {
    int B = buf->B, T = buf->T;
    size_t n_blocks = ((size_t)B + CELL_BLOCK_ROWS - 1) / CELL_BLOCK_ROWS;
    size_t n_chunks = (G + COLUMN_CHUNK - 1) / COLUMN_CHUNK;
    int threads = threads_for((dw_gather ? (size_t)T * B : n_blocks) * G);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (size_t chunk = 0; chunk < n_chunks; chunk++) {
        size_t j0 = chunk * COLUMN_CHUNK;
        size_t j1 = j0 + COLUMN_CHUNK < G ? j0 + COLUMN_CHUNK : G;
        for (size_t block = 0; block < n_blocks; block++)
            for (size_t j = j0; j < j1; j++) dbias[j] += buf->block_sums[block * G + j];
        for (int t = T - 1; t >= 0 && dw_gather; t--)
            scatter_rows(buf->dpre + (size_t)t * B * G, buf->inputs + (size_t)t * B, 0, B, G,
                         j0, j1, dw_gather);
    }
}

/* Runs the reverse recurrence of layer l. It reads buf->dout (gradient of the
 * layer's output h_1..h_T), fills buf->dpre and adds (or, without
 * `accumulate`, writes) the bias gradient. Layer 0 reads w_ih by row gather,
 * so its w_ih gradient dw_gather (V, 4H) is a scatter-add of the dpre rows.
 * Upper layers pass NULL. Leaves dL/dh0 and dL/dc0 in the outputs. */
static void layer_backward_time(lstm_buffers *buf, int l, int H, int V, const lstm_weights *w,
                                float *dbias, float *dw_gather, float *dh0, float *dc0,
                                int accumulate) {
    int B = buf->B, T = buf->T;
    size_t BH = (size_t)B * H, G = 4 * (size_t)H;
    size_t n_blocks = ((size_t)B + CELL_BLOCK_ROWS - 1) / CELL_BLOCK_ROWS;
    memset(buf->dh_rec, 0, BH * sizeof(float));
    memset(buf->dc, 0, BH * sizeof(float));
    memset(buf->block_sums, 0, n_blocks * G * sizeof(float));
    if (!accumulate) {
        memset(dbias, 0, G * sizeof(float));
        if (dw_gather) memset(dw_gather, 0, (size_t)V * G * sizeof(float));
    }
    // transposing w_hh into packed panels pays off only with several rows
    int use_packed = B >= MIN_ROWS_PACKED;
    if (use_packed) charlstm_gemm_pack_bt((int)G, H, w->w_hh[l], (int)G, buf->packed);
    int threads = recurrence_threads(B, H);
    if (threads > 1) {
        charlstm_kernels_init(); // before the threads call products at once
#pragma omp parallel num_threads(threads)
        {
            int first, end;
            thread_rows(B, thread_index(), thread_count(), &first, &end);
            for (int t = T - 1; t >= 0; t--)
                backward_step(buf, l, t, H, w, use_packed, first, end, 1, NULL);
        }
        add_gate_gradients(buf, G, dbias, dw_gather);
    } else {
        // The products start their own threads here, so no parallel region
        // may enclose them: inside one, batch 1 at 2 threads ran about 12 times
        // slower (1,478 against 17,424 chars/s).
        int cell_threads = cell_threads_for(BH);
        float *scatter_now = cell_threads > 1 ? dw_gather : NULL;
        for (int t = T - 1; t >= 0; t--)
            backward_step(buf, l, t, H, w, use_packed, 0, B, cell_threads, scatter_now);
        add_gate_gradients(buf, G, dbias, scatter_now ? NULL : dw_gather);
    }
    memcpy(dh0, buf->dh_rec, BH * sizeof(float));
    memcpy(dc0, buf->dc, BH * sizeof(float));
}

void lstm_backward(lstm_buffers *buf, const charlstm_model_config *mc, const lstm_weights *w,
                   const lstm_weights *dw, float *dh0, float *dc0, int accumulate) {
    int B = buf->B, T = buf->T, H = mc->n_hidden, V = mc->n_vocab, L = mc->n_layers;
    size_t TB = (size_t)T * B, BH = (size_t)B * H, G = 4 * (size_t)H;

    // output projection: logits = y @ out_w + out_b
    softmax_loss_backward(buf, V);
    const float *y = layer_output(buf, L - 1, H);
    charlstm_gemm_tn(H, V, (int)TB, y, H, buf->logits, V, dw->out_w, V, accumulate);
    add_column_sums(buf->logits, TB, (size_t)V, dw->out_b, accumulate);
    charlstm_gemm_nt((int)TB, H, V, buf->logits, V, w->out_w, V, buf->dout, H, 0);

    for (int l = L - 1; l >= 0; l--) {
        // through dropout: the output was h * mask
        if (buf->mask[l]) {
            int threads = threads_for(TB * H);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
            for (size_t k = 0; k < TB * H; k++) buf->dout[k] *= buf->mask[l][k];
        }
        layer_backward_time(buf, l, H, V, w, dw->bias[l], l == 0 ? dw->w_ih[0] : NULL,
                            dh0 + l * BH, dc0 + l * BH, accumulate);

        // weight gradients as one product over all T steps
        charlstm_gemm_tn(H, (int)G, (int)TB, buf->h[l], H, buf->dpre, (int)G, dw->w_hh[l],
                         (int)G, accumulate);
        if (l == 0) break;
        const float *x = layer_output(buf, l - 1, H);
        charlstm_gemm_tn(H, (int)G, (int)TB, x, H, buf->dpre, (int)G, dw->w_ih[l], (int)G,
                         accumulate);
        charlstm_gemm_nt((int)TB, H, (int)G, buf->dpre, (int)G, w->w_ih[l], (int)G, buf->dout,
                         H, 0);
    }
}
