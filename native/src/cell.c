/* Fused LSTM cell nonlinearities for one time step, forward and backward. */
#include <math.h>

#include "internal.h"

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* gates (B, 4H): the pre-activations a_i, a_f, a_o, a_g of each row. */
void lstm_cell_forward(int B, int H, float *gates, const float *c_prev, float *c_next,
                       float *h_next, float *tanh_c) {
    for (int b = 0; b < B; b++) {
        float *gi = gates + (size_t)b * 4 * H;
        float *gf = gi + H, *go = gi + 2 * H, *gg = gi + 3 * H;
        const float *cp = c_prev + (size_t)b * H;
        float *cn = c_next + (size_t)b * H;
        float *hn = h_next + (size_t)b * H;
        float *tc = tanh_c + (size_t)b * H;
        for (int j = 0; j < H; j++) {
            float i = sigmoid(gi[j]), f = sigmoid(gf[j]), o = sigmoid(go[j]);
            float g = tanhf(gg[j]);
            float c = f * cp[j] + i * g;
            float t = tanhf(c);
            gi[j] = i;
            gf[j] = f;
            go[j] = o;
            gg[j] = g;
            cn[j] = c;
            tc[j] = t;
            hn[j] = o * t;
        }
    }
}

/* Differentiates c = f*c_prev + i*g and h = o*tanh(c), then each gate's
 * nonlinearity: sigmoid' = s(1-s), tanh' = 1-t^2. */
void lstm_cell_backward(int B, int H, const float *gates, const float *c_prev,
                        const float *tanh_c, const float *dh_out, const float *dh_rec,
                        float *dc, float *dpre) {
    for (int b = 0; b < B; b++) {
        const float *gi = gates + (size_t)b * 4 * H;
        const float *gf = gi + H, *go = gi + 2 * H, *gg = gi + 3 * H;
        const float *cp = c_prev + (size_t)b * H;
        const float *tc = tanh_c + (size_t)b * H;
        const float *dho = dh_out + (size_t)b * H;
        const float *dhr = dh_rec + (size_t)b * H;
        float *dcb = dc + (size_t)b * H;
        float *di = dpre + (size_t)b * 4 * H;
        float *df = di + H, *dout = di + 2 * H, *dg = di + 3 * H;
        for (int j = 0; j < H; j++) {
            float i = gi[j], f = gf[j], o = go[j], g = gg[j], t = tc[j];
            float dh = dho[j] + dhr[j];
            float dcj = dcb[j] + dh * o * (1.0f - t * t);
            di[j] = dcj * g * i * (1.0f - i);
            df[j] = dcj * cp[j] * f * (1.0f - f);
            dout[j] = dh * t * o * (1.0f - o);
            dg[j] = dcj * i * (1.0f - g * g);
            dcb[j] = dcj * f;
        }
    }
}
