// AVX2 + FMA kernels for gemm.c. Each function carries its own target attribute, so the library
// builds without -mavx2 and gemm.c calls these only after checking the CPU.
#include "gemm.h"

#ifdef CHARLSTM_GEMM_X86

#include <immintrin.h>

#define AVX2_FUNCTION __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((always_inline)) AVX2_FUNCTION

// Tile of 6 rows x 16 columns: 12 ymm accumulators, 2 for the B row and 1 for the broadcast
// A element, within the 16 registers.
#define AVX2_MR 6
#define AVX2_NR 16

// Returns the maskload/maskstore mask of the first n of 8 lanes (n may be negative or exceed 8).
AVX2_INLINE __m256i first_lanes(int n)
{
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
}

// ----------------------------------------------------------------------------
// micro-kernel

// Computes an m x (8*vectors) tile; m, vectors and rows_apart are constants after
// inlining. With rows_apart 0 the rows of the A tile are adjacent (a_row_stride is 1).
AVX2_INLINE void micro_tile(const int m, const int vectors, const int rows_apart, int kc,
                            const float *a, int a_row_stride, int a_k_stride, const float *b,
                            int b_stride, float *c, int ldc, int n, int accumulate)
{
    __m256 acc0[AVX2_MR], acc1[AVX2_MR];
    for (int i = 0; i < m; i++) {
        acc0[i] = _mm256_setzero_ps();
        acc1[i] = _mm256_setzero_ps();
        _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
    }

#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b);
        __m256 b1 = vectors == 2 ? _mm256_loadu_ps(b + 8) : b0;
        for (int i = 0; i < m; i++) {
            __m256 ai = _mm256_broadcast_ss(rows_apart ? a + (size_t)i * a_row_stride : a + i);
            acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
            if (vectors == 2) {
                acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
            }
        }
        a += a_k_stride;
        b += b_stride;
    }

    __m256i mask0 = first_lanes(n);
    __m256i mask1 = first_lanes(n - 8);
    // fully unrolled, so the accumulator arrays stay in registers instead of memory
#pragma GCC unroll 16
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (accumulate) {
            acc0[i] = _mm256_add_ps(_mm256_maskload_ps(ci, mask0), acc0[i]);
        }
        _mm256_maskstore_ps(ci, mask0, acc0[i]);
        if (vectors == 2) {
            if (accumulate) {
                acc1[i] = _mm256_add_ps(_mm256_maskload_ps(ci + 8, mask1), acc1[i]);
            }
            _mm256_maskstore_ps(ci + 8, mask1, acc1[i]);
        }
    }
}

// Picks the tile width for n columns; rows and rows_apart are constants after inlining.
AVX2_INLINE void micro_rows(const int rows, const int rows_apart, int kc, const float *a,
                            int a_row_stride, int a_k_stride, const float *b, int b_stride,
                            float *c, int ldc, int n, int accumulate)
{
    if (n > 8) {
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

AVX2_FUNCTION static void micro_avx2(int m, int n, int kc, const float *a, int a_row_stride,
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
    default:
        break;
    }
}

// ----------------------------------------------------------------------------
// packing by transposition

// Transposes the 8 x 8 block held in r: afterwards r[j] holds what was lane j of every row.
AVX2_INLINE void transpose_8x8(__m256 r[8])
{
    __m256 t[8];
    // interleave pairs of rows: lanes (r0[0], r1[0], r0[1], r1[1]) in each 128-bit half
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    // groups of four rows: each half is now one column of four rows
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // join the halves of rows 0-3 and rows 4-7
    for (int i = 0; i < 4; i++) {
        t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
        t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = t[i];
    }
}

// The pack_group kernel (see gemm.h), for up to 8 rows: 8 x 8 blocks are transposed in
// registers instead of moving one float at a time.
AVX2_FUNCTION static void pack_group_avx2(int depth, int rows, int lanes, const float *src,
                                          int ld, int width, float *dst)
{
    __m256i store_mask = first_lanes(lanes);
    for (int k0 = 0; k0 < depth; k0 += 8) {
        __m256i load_mask = first_lanes(depth - k0);
        __m256 r[8];
        for (int j = 0; j < 8; j++) {
            r[j] = j < rows ? _mm256_maskload_ps(src + (size_t)j * ld + k0, load_mask)
                            : _mm256_setzero_ps();
        }
        transpose_8x8(r);
        int ks = depth - k0 < 8 ? depth - k0 : 8;
        for (int k = 0; k < ks; k++) {
            _mm256_maskstore_ps(dst + (size_t)(k0 + k) * width, store_mask, r[k]);
        }
    }
}

// ----------------------------------------------------------------------------
// vector-matrix products (M = 1)

// y for one chunk of up to 64 columns over all K; lanes past n are masked off.
AVX2_INLINE void gemv_n_chunk(int n, int K, const float *x, int incx, const float *B, int ldb,
                              float *y, int accumulate)
{
    enum { VECTORS = 8 };
    __m256i mask[VECTORS];
    __m256 acc[VECTORS];
    for (int v = 0; v < VECTORS; v++) {
        mask[v] = first_lanes(n - 8 * v);
        acc[v] = _mm256_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        const float *bk = B + (size_t)k * ldb;
        __m256 xk = _mm256_set1_ps(x[(size_t)k * incx]);
        for (int v = 0; v < VECTORS; v++) {
            acc[v] = _mm256_fmadd_ps(xk, _mm256_maskload_ps(bk + 8 * v, mask[v]), acc[v]);
        }
    }
    for (int v = 0; v < VECTORS; v++) {
        if (accumulate) {
            acc[v] = _mm256_add_ps(_mm256_maskload_ps(y + 8 * v, mask[v]), acc[v]);
        }
        _mm256_maskstore_ps(y + 8 * v, mask[v], acc[v]);
    }
}

AVX2_FUNCTION static void gemv_n_avx2(int N, int K, const float *x, int incx, const float *B,
                                      int ldb, float *y, int accumulate)
{
    for (int j0 = 0; j0 < N; j0 += 64) {
        gemv_n_chunk(N - j0, K, x, incx, B + j0, ldb, y + j0, accumulate);
    }
}

// Returns the sum of the 8 lanes of v, always in the same order.
AVX2_INLINE float sum_lanes(__m256 v)
{
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    half = _mm_add_ss(half, _mm_movehdup_ps(half));
    return _mm_cvtss_f32(half);
}

// Dot products of x with `rows` consecutive rows of B. Every row is summed the same way
// whatever `rows` is.
AVX2_INLINE void dot_rows(const int rows, int K, const float *x, const float *B, int ldb,
                          float *y, int accumulate)
{
    __m256 acc0[4], acc1[4];
    for (int r = 0; r < rows; r++) {
        acc0[r] = _mm256_setzero_ps();
        acc1[r] = _mm256_setzero_ps();
    }
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m256 x0 = _mm256_loadu_ps(x + k);
        __m256 x1 = _mm256_loadu_ps(x + k + 8);
        for (int r = 0; r < rows; r++) {
            const float *br = B + (size_t)r * ldb + k;
            acc0[r] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(br), acc0[r]);
            acc1[r] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(br + 8), acc1[r]);
        }
    }
    if (k < K) {
        __m256i mask0 = first_lanes(K - k);
        __m256i mask1 = first_lanes(K - k - 8);
        __m256 x0 = _mm256_maskload_ps(x + k, mask0);
        __m256 x1 = _mm256_maskload_ps(x + k + 8, mask1);
        for (int r = 0; r < rows; r++) {
            const float *br = B + (size_t)r * ldb + k;
            acc0[r] = _mm256_fmadd_ps(x0, _mm256_maskload_ps(br, mask0), acc0[r]);
            acc1[r] = _mm256_fmadd_ps(x1, _mm256_maskload_ps(br + 8, mask1), acc1[r]);
        }
    }
    for (int r = 0; r < rows; r++) {
        float sum = sum_lanes(_mm256_add_ps(acc0[r], acc1[r]));
        y[r] = accumulate ? y[r] + sum : sum;
    }
}

AVX2_FUNCTION static void gemv_t_avx2(int N, int K, const float *x, const float *B, int ldb,
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

// y for `panels` consecutive packed panels (32 columns, 4 ymm each); n columns are stored.
AVX2_INLINE void gemv_panels(const int panels, int n, int K, const float *x, const float *packed,
                             float *y, int accumulate)
{
    enum { MAX_PANELS = 2, VECTORS_PER_PANEL = CHARLSTM_PACK_NR / 8 };
    __m256 acc[MAX_PANELS * VECTORS_PER_PANEL];
    for (int v = 0; v < panels * VECTORS_PER_PANEL; v++) {
        acc[v] = _mm256_setzero_ps();
    }
    size_t panel_stride = (size_t)K * CHARLSTM_PACK_NR;
    for (int k = 0; k < K; k++) {
        __m256 xk = _mm256_set1_ps(x[k]);
        const float *bk = packed + (size_t)k * CHARLSTM_PACK_NR;
        for (int v = 0; v < panels * VECTORS_PER_PANEL; v++) {
            const float *bv = bk + (v / VECTORS_PER_PANEL) * panel_stride +
                              8 * (v % VECTORS_PER_PANEL);
            acc[v] = _mm256_fmadd_ps(xk, _mm256_loadu_ps(bv), acc[v]);
        }
    }
    for (int v = 0; v < panels * VECTORS_PER_PANEL; v++) {
        __m256i mask = first_lanes(n - 8 * v);
        if (accumulate) {
            acc[v] = _mm256_add_ps(_mm256_maskload_ps(y + 8 * v, mask), acc[v]);
        }
        _mm256_maskstore_ps(y + 8 * v, mask, acc[v]);
    }
}

AVX2_FUNCTION static void gemv_packed_avx2(int N, int K, const float *x, const float *packed,
                                           float *y, int accumulate)
{
    int j0 = 0;
    for (; j0 + 2 * CHARLSTM_PACK_NR <= N; j0 += 2 * CHARLSTM_PACK_NR) {
        gemv_panels(2, N - j0, K, x, packed + (size_t)j0 * K, y + j0, accumulate);
    }
    for (; j0 < N; j0 += CHARLSTM_PACK_NR) {
        gemv_panels(1, N - j0, K, x, packed + (size_t)j0 * K, y + j0, accumulate);
    }
}

const charlstm_gemm_path charlstm_gemm_path_avx2 = {
    .name = "avx2",
    .mr = AVX2_MR,
    .nr = AVX2_NR,
    .kc = 256,
    .mc = 144,
    .nc = 2048,
    .micro = micro_avx2,
    .gemv_n = gemv_n_avx2,
    .gemv_t = gemv_t_avx2,
    .gemv_packed = gemv_packed_avx2,
    .pack_group = pack_group_avx2,
    .pack_group_rows = 8,
};

#endif // CHARLSTM_GEMM_X86
