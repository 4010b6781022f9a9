// AVX-512 kernels for gemm.c. Each function carries its own target attribute, so the library
// builds without -mavx512f and gemm.c calls these only after checking the CPU.
#include "gemm.h"

#ifdef CHARLSTM_GEMM_X86

#include <immintrin.h>

#define AVX512_FUNCTION __attribute__((target("avx512f,avx512vl,avx512dq,fma")))
#define AVX512_INLINE static inline __attribute__((always_inline)) AVX512_FUNCTION

// Tile of 12 rows x 32 columns: 24 zmm accumulators, 2 for the B row, and the A element comes
// from a broadcast memory operand, leaving registers spare within the 32.
#define AVX512_MR 12
#define AVX512_NR 32

// Returns the mask of the first n of 16 lanes (n may exceed 16).
AVX512_INLINE __mmask16 first_lanes(int n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n > 0 ? n : 0)) - 1u);
}

// ----------------------------------------------------------------------------
// micro-kernel

// Computes an m x (16*vectors) tile; m, vectors and rows_apart are constants after
// inlining, so the accumulator arrays become registers. With rows_apart 0 the rows of the A
// tile are adjacent (a_row_stride is 1), so a broadcast needs no extra address register.
AVX512_INLINE void micro_tile(const int m, const int vectors, const int rows_apart, int kc,
                              const float *a, int a_row_stride, int a_k_stride, const float *b,
                              int b_stride, float *c, int ldc, int n, int accumulate)
{
    __m512 acc0[AVX512_MR], acc1[AVX512_MR];
    for (int i = 0; i < m; i++) {
        acc0[i] = _mm512_setzero_ps();
        acc1[i] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + (size_t)i * ldc + 16), _MM_HINT_T0);
    }

    // With rows apart, row i is read at group[i / 4] + (i % 4) * a_row_stride, so the loop
    // needs 3 offsets and 3 moving pointers instead of 12 row addresses, which would not fit
    // in the 16 general registers together with the rest.
    size_t row_stride = (size_t)a_row_stride;
    const float *group[3] = {a, a + 4 * row_stride, a + 8 * row_stride};
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b);
        __m512 b1 = vectors == 2 ? _mm512_loadu_ps(b + 16) : b0;
        for (int i = 0; i < m; i++) {
            float a_ik = rows_apart ? group[i / 4][(i % 4) * row_stride] : a[i];
            __m512 ai = _mm512_set1_ps(a_ik);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            if (vectors == 2) {
                acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
            }
        }
        if (rows_apart) {
            group[0] += a_k_stride;
            group[1] += a_k_stride;
            group[2] += a_k_stride;
        } else {
            a += a_k_stride;
        }
        b += b_stride;
    }

    __mmask16 mask0 = first_lanes(n);
    __mmask16 mask1 = first_lanes(n - 16);
    // fully unrolled, so the accumulator arrays stay in registers instead of memory
#pragma GCC unroll 16
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (accumulate) {
            acc0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(mask0, ci), acc0[i]);
        }
        _mm512_mask_storeu_ps(ci, mask0, acc0[i]);
        if (vectors == 2) {
            if (accumulate) {
                acc1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(mask1, ci + 16), acc1[i]);
            }
            _mm512_mask_storeu_ps(ci + 16, mask1, acc1[i]);
        }
    }
}

// Picks the tile width for n columns; rows and rows_apart are constants after inlining.
AVX512_INLINE void micro_rows(const int rows, const int rows_apart, int kc, const float *a,
                              int a_row_stride, int a_k_stride, const float *b, int b_stride,
                              float *c, int ldc, int n, int accumulate)
{
    if (n > 16) {
        micro_tile(rows, 2, rows_apart, kc, a, a_row_stride, a_k_stride, b, b_stride, c, ldc, n,
                   accumulate);
    } else {
        micro_tile(rows, 1, rows_apart, kc, a, a_row_stride, a_k_stride, b, b_stride, c, ldc, n,
                   accumulate);
    }
}

#define MICRO_CASE(rows)                                                                       \
    case rows:                                                                                 \
        if (a_row_stride != 1) {                                                               \
            micro_rows(rows, 1, kc, a, a_row_stride, a_k_stride, b, b_stride, c, ldc, n,       \
                       accumulate);                                                            \
        } else {                                                                               \
            micro_rows(rows, 0, kc, a, 1, a_k_stride, b, b_stride, c, ldc, n, accumulate);      \
        }                                                                                      \
        break;

AVX512_FUNCTION static void micro_avx512(int m, int n, int kc, const float *a, int a_row_stride,
                                         int a_k_stride, const float *b, int b_stride, float *c,
                                         int ldc, int accumulate)
{
    switch (m) {
        MICRO_CASE(1)
        MICRO_CASE(2)
        MICRO_CASE(3)
        MICRO_CASE(4)
        MICRO_CASE(5)
        MICRO_CASE(6)
        MICRO_CASE(7)
        MICRO_CASE(8)
        MICRO_CASE(9)
        MICRO_CASE(10)
        MICRO_CASE(11)
        MICRO_CASE(12)
    default:
        break;
    }
}

// ----------------------------------------------------------------------------
// packing by transposition

// Transposes the 16 x 16 block held in r: afterwards r[j] holds what was lane j of every row.
AVX512_INLINE void transpose_16x16(__m512 r[16])
{
    __m512 t[16];
    // interleave pairs of rows: lanes (r0[0], r1[0], r0[1], r1[1]) in each 128-bit part
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // groups of four rows: each 128-bit part is now one column of four rows
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // move the 128-bit parts between groups of eight rows, then between the two halves
    for (int h = 0; h < 16; h += 8) {
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

// The pack_group kernel (see gemm.h), for up to 16 rows: 16 x 16 blocks are transposed in
// registers instead of moving one float at a time.
AVX512_FUNCTION static void pack_group_avx512(int depth, int rows, int lanes, const float *src,
                                              int ld, int width, float *dst)
{
    __mmask16 store_mask = first_lanes(lanes);
    for (int k0 = 0; k0 < depth; k0 += 16) {
        __mmask16 load_mask = first_lanes(depth - k0);
        __m512 r[16];
        for (int j = 0; j < 16; j++) {
            r[j] = j < rows ? _mm512_maskz_loadu_ps(load_mask, src + (size_t)j * ld + k0)
                            : _mm512_setzero_ps();
        }
        transpose_16x16(r);
        int ks = depth - k0 < 16 ? depth - k0 : 16;
        for (int k = 0; k < ks; k++) {
            _mm512_mask_storeu_ps(dst + (size_t)(k0 + k) * width, store_mask, r[k]);
        }
    }
}

// ----------------------------------------------------------------------------
// vector-matrix products (M = 1)

// y(0:16*8) over all K for one chunk of up to 128 columns; lanes past n are masked off.
AVX512_INLINE void gemv_n_chunk(int n, int K, const float *x, int incx, const float *B,
                                int ldb, float *y, int accumulate)
{
    enum { VECTORS = 8 };
    __mmask16 mask[VECTORS];
    __m512 acc[VECTORS];
    for (int v = 0; v < VECTORS; v++) {
        mask[v] = first_lanes(n - 16 * v);
        acc[v] = _mm512_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        const float *bk = B + (size_t)k * ldb;
        __m512 xk = _mm512_set1_ps(x[(size_t)k * incx]);
        for (int v = 0; v < VECTORS; v++) {
            acc[v] = _mm512_fmadd_ps(xk, _mm512_maskz_loadu_ps(mask[v], bk + 16 * v), acc[v]);
        }
    }
    for (int v = 0; v < VECTORS; v++) {
        if (accumulate) {
            acc[v] = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], y + 16 * v), acc[v]);
        }
        _mm512_mask_storeu_ps(y + 16 * v, mask[v], acc[v]);
    }
}

AVX512_FUNCTION static void gemv_n_avx512(int N, int K, const float *x, int incx,
                                          const float *B, int ldb, float *y, int accumulate)
{
    for (int j0 = 0; j0 < N; j0 += 128) {
        gemv_n_chunk(N - j0, K, x, incx, B + j0, ldb, y + j0, accumulate);
    }
}

// Dot products of x with `rows` consecutive rows of B. Every row is summed the same way
// whatever `rows` is, so the result for a row does not depend on how rows are grouped.
AVX512_INLINE void dot_rows(const int rows, int K, const float *x, const float *B, int ldb,
                            float *y, int accumulate)
{
    __m512 acc0[4], acc1[4];
    for (int r = 0; r < rows; r++) {
        acc0[r] = _mm512_setzero_ps();
        acc1[r] = _mm512_setzero_ps();
    }
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512 x0 = _mm512_loadu_ps(x + k);
        __m512 x1 = _mm512_loadu_ps(x + k + 16);
        for (int r = 0; r < rows; r++) {
            const float *br = B + (size_t)r * ldb + k;
            acc0[r] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(br), acc0[r]);
            acc1[r] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(br + 16), acc1[r]);
        }
    }
    if (k < K) {
        __mmask16 mask0 = first_lanes(K - k);
        __mmask16 mask1 = first_lanes(K - k - 16);
        __m512 x0 = _mm512_maskz_loadu_ps(mask0, x + k);
        __m512 x1 = _mm512_maskz_loadu_ps(mask1, x + k + 16);
        for (int r = 0; r < rows; r++) {
            const float *br = B + (size_t)r * ldb + k;
            acc0[r] = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(mask0, br), acc0[r]);
            acc1[r] = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(mask1, br + 16), acc1[r]);
        }
    }
    for (int r = 0; r < rows; r++) {
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
        y[r] = accumulate ? y[r] + sum : sum;
    }
}

AVX512_FUNCTION static void gemv_t_avx512(int N, int K, const float *x, const float *B, int ldb,
                                          float *y, int accumulate)
{
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        dot_rows(4, K, x, B + (size_t)n * ldb, ldb, y + n, accumulate);
    }
    for (; n < N; n++) {
        dot_rows(1, K, x, B + (size_t)n * ldb, ldb, y + n, accumulate);
    }
}

// y for `panels` consecutive packed panels (32 columns each); n columns are stored.
AVX512_INLINE void gemv_panels(const int panels, int n, int K, const float *x,
                               const float *packed, float *y, int accumulate)
{
    enum { MAX_PANELS = 4 };
    __m512 acc[2 * MAX_PANELS];
    for (int v = 0; v < 2 * panels; v++) {
        acc[v] = _mm512_setzero_ps();
    }
    size_t panel_stride = (size_t)K * CHARLSTM_PACK_NR;
    for (int k = 0; k < K; k++) {
        __m512 xk = _mm512_set1_ps(x[k]);
        const float *bk = packed + (size_t)k * CHARLSTM_PACK_NR;
        for (int v = 0; v < 2 * panels; v++) {
            __m512 bv = _mm512_loadu_ps(bk + (v / 2) * panel_stride + 16 * (v % 2));
            acc[v] = _mm512_fmadd_ps(xk, bv, acc[v]);
        }
    }
    for (int v = 0; v < 2 * panels; v++) {
        __mmask16 mask = first_lanes(n - 16 * v);
        if (accumulate) {
            acc[v] = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y + 16 * v), acc[v]);
        }
        _mm512_mask_storeu_ps(y + 16 * v, mask, acc[v]);
    }
}

AVX512_FUNCTION static void gemv_packed_avx512(int N, int K, const float *x,
                                               const float *packed, float *y, int accumulate)
{
    int j0 = 0;
    for (; j0 + 4 * CHARLSTM_PACK_NR <= N; j0 += 4 * CHARLSTM_PACK_NR) {
        gemv_panels(4, N - j0, K, x, packed + (size_t)j0 * K, y + j0, accumulate);
    }
    for (; j0 < N; j0 += CHARLSTM_PACK_NR) {
        gemv_panels(1, N - j0, K, x, packed + (size_t)j0 * K, y + j0, accumulate);
    }
}

const charlstm_gemm_path charlstm_gemm_path_avx512 = {
    .name = "avx512",
    .mr = AVX512_MR,
    .nr = AVX512_NR,
    .kc = 256,
    .mc = 480,
    .nc = 2048,
    .micro = micro_avx512,
    .gemv_n = gemv_n_avx512,
    .gemv_t = gemv_t_avx512,
    .gemv_packed = gemv_packed_avx512,
    .pack_group = pack_group_avx512,
    .pack_group_rows = 16,
};

#endif // CHARLSTM_GEMM_X86
