/* Fused LSTM cell nonlinearities for one time step, forward and backward.
 *
 * The loops are written so that gcc vectorizes them: exp is a polynomial on
 * plain floats (no libm call), and each function is compiled for AVX-512,
 * AVX2 and baseline x86-64, picked at load time through target_clones. */
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "isa.h"

/* exp(x) by x = n*ln2 + r, |r| <= ln2/2, and a degree-6 Taylor polynomial for
 * e^r (relative error below 2e-7). Inputs are clamped to [-87, 88], so the
 * result stays a normal finite float. */
static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float shifter = 12582912.0f; // 1.5 * 2^23: adding it rounds to an integer
    float t = x * 1.44269504f + shifter;
    float n = t - shifter;
    float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_poly(-x)); }

/* tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|); near 0, where 1 - e
 * cancels, an odd Taylor polynomial keeps the relative error small. */
static inline float tanh_poly(float x) {
    float a = x < 0.0f ? -x : x;
    float e = exp_poly(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    float a2 = a * a;
    float small = a * (1.0f + a2 * (-1.0f / 3.0f + a2 * (2.0f / 15.0f)));
    float y = a < 0.04f ? small : big;
    return x < 0.0f ? -y : y;
}

CLONE_FOR_ISA
static void cell_forward_row(int H, float *restrict gi, float *restrict gf, float *restrict go,
                             float *restrict gg, const float *restrict bias,
                             const float *restrict cp, float *restrict cn, float *restrict hn,
                             float *restrict tc) {
    const float *bi = bias, *bf = bias + H, *bo = bias + 2 * H, *bg = bias + 3 * H;
    for (int j = 0; j < H; j++) {
        float i = sigmoid(gi[j] + bi[j]), f = sigmoid(gf[j] + bf[j]);
        float o = sigmoid(go[j] + bo[j]), g = tanh_poly(gg[j] + bg[j]);
        float c = f * cp[j] + i * g;
        float t = tanh_poly(c);
        gi[j] = i;
        gf[j] = f;
        go[j] = o;
        gg[j] = g;
        cn[j] = c;
        tc[j] = t;
        hn[j] = o * t;
    }
}

/* Steps one row like cell_forward_row, after adding a row x (4H) of
 * input-to-gate terms to the pre-activations. */
CLONE_FOR_ISA
static void cell_forward_row_input(int H, float *restrict gi, float *restrict gf,
                                   float *restrict go, float *restrict gg,
                                   const float *restrict x, const float *restrict bias,
                                   const float *restrict cp, float *restrict cn,
                                   float *restrict hn, float *restrict tc) {
    const float *xi = x, *xf = x + H, *xo = x + 2 * H, *xg = x + 3 * H;
    const float *bi = bias, *bf = bias + H, *bo = bias + 2 * H, *bg = bias + 3 * H;
    for (int j = 0; j < H; j++) {
        float i = sigmoid(gi[j] + xi[j] + bi[j]), f = sigmoid(gf[j] + xf[j] + bf[j]);
        float o = sigmoid(go[j] + xo[j] + bo[j]), g = tanh_poly(gg[j] + xg[j] + bg[j]);
        float c = f * cp[j] + i * g;
        float t = tanh_poly(c);
        gi[j] = i;
        gf[j] = f;
        go[j] = o;
        gg[j] = g;
        cn[j] = c;
        tc[j] = t;
        hn[j] = o * t;
    }
}

void lstm_cell_forward_input(int B, int H, float *gates, const float *w_in,
                             const int32_t *tokens, const float *bias, const float *c_prev,
                             float *c_next, float *h_next, float *tanh_c) {
    size_t G = 4 * (size_t)H;
    for (int b = 0; b < B; b++) {
        float *gi = gates + (size_t)b * G;
        size_t row = (size_t)b * H;
        if (w_in)
            cell_forward_row_input(H, gi, gi + H, gi + 2 * H, gi + 3 * H,
                                   w_in + (size_t)tokens[b] * G, bias, c_prev + row,
                                   c_next + row, h_next + row, tanh_c + row);
        else
            cell_forward_row(H, gi, gi + H, gi + 2 * H, gi + 3 * H, bias, c_prev + row,
                             c_next + row, h_next + row, tanh_c + row);
    }
}

void lstm_cell_forward(int B, int H, float *gates, const float *bias, const float *c_prev,
                       float *c_next, float *h_next, float *tanh_c) {
    lstm_cell_forward_input(B, H, gates, NULL, NULL, bias, c_prev, c_next, h_next, tanh_c);
}

/* Differentiates c = f*c_prev + i*g and h = o*tanh(c), then each gate's
 * nonlinearity: sigmoid' = s(1-s), tanh' = 1-t^2. Writes the gate gradients
 * to di..dg and adds them to si..sg. */
CLONE_FOR_ISA
static void cell_backward_row(int H, const float *restrict gi, const float *restrict gf,
                              const float *restrict go, const float *restrict gg,
                              const float *restrict cp, const float *restrict tc,
                              const float *restrict dho, const float *restrict dhr,
                              float *restrict dcb, float *restrict di, float *restrict df,
                              float *restrict dout, float *restrict dg, float *restrict si,
                              float *restrict sf, float *restrict so, float *restrict sg) {
    for (int j = 0; j < H; j++) {
        float i = gi[j], f = gf[j], o = go[j], g = gg[j], t = tc[j];
        float dh = dho[j] + dhr[j];
        float dcj = dcb[j] + dh * o * (1.0f - t * t);
        float dai = dcj * g * i * (1.0f - i);
        float daf = dcj * cp[j] * f * (1.0f - f);
        float dao = dh * t * o * (1.0f - o);
        float dag = dcj * i * (1.0f - g * g);
        di[j] = dai;
        df[j] = daf;
        dout[j] = dao;
        dg[j] = dag;
        dcb[j] = dcj * f;
        si[j] += dai;
        sf[j] += daf;
        so[j] += dao;
        sg[j] += dag;
    }
}

void lstm_cell_backward(int B, int H, const float *gates, const float *c_prev,
                        const float *tanh_c, const float *dh_out, const float *dh_rec,
                        float *dc, float *dpre, float *block_sums) {
    size_t G = 4 * (size_t)H;
    for (int b = 0; b < B; b++) {
        const float *gi = gates + (size_t)b * G;
        float *di = dpre + (size_t)b * G;
        float *sum = block_sums + (size_t)(b / CELL_BLOCK_ROWS) * G;
        size_t row = (size_t)b * H;
        cell_backward_row(H, gi, gi + H, gi + 2 * H, gi + 3 * H, c_prev + row, tanh_c + row,
                          dh_out + row, dh_rec + row, dc + row, di, di + H, di + 2 * H,
                          di + 3 * H, sum, sum + H, sum + 2 * H, sum + 3 * H);
    }
}
