// Matrix products: kernel path selection, packing, cache blocking, threads, and the portable C
// kernels. The per-ISA micro-kernels live in gemm_avx2.c and gemm_avx512.c.
//
// The blocked product follows the GotoBLAS/BLIS loop nest. For each block of NC columns and KC
// depth, B is packed into panels of nr columns. For each block of MC rows, A is packed into
// panels of mr rows, or read in place (see gemm_blocked). The micro-kernel then computes one
// mr x nr tile of C from one A tile and one B panel, and keeps the C tile in registers for
// the whole depth.
#include "gemm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

// Minimum floating-point operations per thread before a product uses another thread, because
// an OpenMP region costs about a microsecond to start. An estimate, not a tuned value. It is
// low enough that a vector-matrix product with H = 256 splits its weights over two cores, so
// each core keeps its half in its own cache across calls.
#define MIN_FLOPS_PER_THREAD 2.5e5

// A transposed A is read in place, without packing, when N is at most this: measured faster
// for N <= 128 and slower for N = 256 (tn, M = 512, K = 2048, avx512).
#define A_IN_PLACE_MAX_N 128
// Maximum columns of a packed B block when A is read in place. Each row tile of A then passes
// over the whole block, so the block (kc x nc floats, 1 MiB with kc = 256) should fit in
// about half of the L2 cache.
#define A_IN_PLACE_NC 1024

// ----------------------------------------------------------------------------
// portable C kernels (plain loops with constant bounds that gcc -O3 vectorizes)

#define PORTABLE_MR 4
#define PORTABLE_NR 8

static void micro_portable(int m, int n, int kc, const float *restrict a, int a_row_stride,
                           int a_k_stride, const float *restrict b, int b_stride,
                           float *restrict c, int ldc, int accumulate)
{
    float acc[PORTABLE_MR][PORTABLE_NR] = {{0.0f}};
    for (int k = 0; k < kc; k++) {
        // rows i >= m may lie outside A when it is read in place, so they are not read
        float ak[PORTABLE_MR];
        for (int i = 0; i < PORTABLE_MR; i++) {
            ak[i] = i < m ? a[(size_t)k * a_k_stride + (size_t)i * a_row_stride] : 0.0f;
        }
        const float *bk = b + (size_t)k * b_stride;
        for (int i = 0; i < PORTABLE_MR; i++) {
            for (int j = 0; j < PORTABLE_NR; j++) {
                acc[i][j] += ak[i] * bk[j];
            }
        }
    }
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < n; j++) {
            ci[j] = accumulate ? ci[j] + acc[i][j] : acc[i][j];
        }
    }
}

static void gemv_n_portable(int N, int K, const float *restrict x, int incx,
                            const float *restrict B, int ldb, float *restrict y, int accumulate)
{
    enum { CHUNK = 64 };
    for (int j0 = 0; j0 < N; j0 += CHUNK) {
        int nb = N - j0 < CHUNK ? N - j0 : CHUNK;
        float acc[CHUNK] = {0.0f};
        for (int k = 0; k < K; k++) {
            float xk = x[(size_t)k * incx];
            const float *bk = B + (size_t)k * ldb + j0;
            for (int j = 0; j < nb; j++) {
                acc[j] += xk * bk[j];
            }
        }
        for (int j = 0; j < nb; j++) {
            y[j0 + j] = accumulate ? y[j0 + j] + acc[j] : acc[j];
        }
    }
}

static void gemv_t_portable(int N, int K, const float *restrict x, const float *restrict B,
                            int ldb, float *restrict y, int accumulate)
{
    enum { LANES = 8 };
    for (int n = 0; n < N; n++) {
        const float *bn = B + (size_t)n * ldb;
        float part[LANES] = {0.0f};
        int k = 0;
        for (; k + LANES <= K; k += LANES) {
            for (int j = 0; j < LANES; j++) {
                part[j] += x[k + j] * bn[k + j];
            }
        }
        for (int j = 0; k + j < K; j++) {
            part[j] += x[k + j] * bn[k + j];
        }
        float sum = 0.0f;
        for (int j = 0; j < LANES; j++) {
            sum += part[j];
        }
        y[n] = accumulate ? y[n] + sum : sum;
    }
}

static void gemv_packed_portable(int N, int K, const float *restrict x,
                                 const float *restrict packed, float *restrict y, int accumulate)
{
    for (int j0 = 0; j0 < N; j0 += CHARLSTM_PACK_NR) {
        const float *panel = packed + (size_t)j0 * K;
        int nb = N - j0 < CHARLSTM_PACK_NR ? N - j0 : CHARLSTM_PACK_NR;
        float acc[CHARLSTM_PACK_NR] = {0.0f};
        for (int k = 0; k < K; k++) {
            float xk = x[k];
            for (int j = 0; j < CHARLSTM_PACK_NR; j++) {
                acc[j] += xk * panel[(size_t)k * CHARLSTM_PACK_NR + j];
            }
        }
        for (int j = 0; j < nb; j++) {
            y[j0 + j] = accumulate ? y[j0 + j] + acc[j] : acc[j];
        }
    }
}

const charlstm_gemm_path charlstm_gemm_path_portable = {
    .name = "portable",
    .mr = PORTABLE_MR,
    .nr = PORTABLE_NR,
    .kc = 256,
    .mc = 128,
    .nc = 2048,
    .micro = micro_portable,
    .gemv_n = gemv_n_portable,
    .gemv_t = gemv_t_portable,
    .gemv_packed = gemv_packed_portable,
};

// ----------------------------------------------------------------------------
// kernel path selection

static const charlstm_gemm_path *current_path;
static int max_threads;

static int path_supported(const charlstm_gemm_path *path)
{
    if (path == &charlstm_gemm_path_portable) {
        return 1;
    }
#ifdef CHARLSTM_GEMM_X86
    __builtin_cpu_init();
    if (path == &charlstm_gemm_path_avx2) {
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (path == &charlstm_gemm_path_avx512) {
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
    }
#endif
    return 0;
}

// Returns the path with this name, or NULL if there is none in this build.
static const charlstm_gemm_path *find_path(const char *name)
{
    static const charlstm_gemm_path *const all_paths[] = {
#ifdef CHARLSTM_GEMM_X86
        &charlstm_gemm_path_avx512,
        &charlstm_gemm_path_avx2,
#endif
        &charlstm_gemm_path_portable,
    };
    for (size_t i = 0; i < sizeof(all_paths) / sizeof(all_paths[0]); i++) {
        if (name == NULL && path_supported(all_paths[i])) {
            return all_paths[i]; // the first supported path is the fastest
        }
        if (name != NULL && strcmp(name, all_paths[i]->name) == 0) {
            return all_paths[i];
        }
    }
    return NULL;
}

void charlstm_kernels_init(void)
{
    if (current_path != NULL) {
        return;
    }
    const char *requested = getenv("CHARLSTM_KERNEL");
    const charlstm_gemm_path *path = requested ? find_path(requested) : NULL;
    if (path == NULL || !path_supported(path)) {
        path = find_path(NULL);
    }
    current_path = path;
}

const char *charlstm_kernels_name(void)
{
    charlstm_kernels_init();
    return current_path->name;
}

int charlstm_kernels_force(const char *name)
{
    charlstm_kernels_init();
    const charlstm_gemm_path *path = name ? find_path(name) : NULL;
    if (path == NULL || !path_supported(path)) {
        return -1;
    }
    current_path = path;
    return 0;
}

void charlstm_set_num_threads(int n)
{
    max_threads = n;
}

int charlstm_get_num_threads(void)
{
#ifdef _OPENMP
    return max_threads > 0 ? max_threads : omp_get_num_procs();
#else
    return 1;
#endif
}

// ----------------------------------------------------------------------------
// packing

// One product as the drivers see it. A_op(i,k) is A(i,k), or A(k,i) when trans_a; B_op(k,j) is
// B(k,j), or B(j,k) when trans_b. With packed_b set, B is ignored and B_op is read from the
// pre-packed layout, whose panels are packed_k rows deep.
typedef struct {
    int trans_a, trans_b;
    const float *A;
    int lda;
    const float *B;
    int ldb;
    const float *packed_b;
    int packed_k;
    float *C;
    int ldc;
    int accumulate;
} gemm_problem;

// Packing reads operands straight from memory, often from DRAM. pack_columns_portable reads
// the source one row at a time, each row a segment of a few KiB that is too short for the
// hardware prefetcher to reach full speed, so it prefetches PREFETCH_ROWS rows ahead.
#define PREFETCH_ROWS 4

// Prefetches the cache lines of `floats` consecutive floats into the L2 cache.
static void prefetch_floats(const float *src, int floats)
{
    for (int k = 0; k < floats; k += 16) {
        __builtin_prefetch(src + k, 0, 2);
    }
    __builtin_prefetch(src + floats - 1, 0, 2);
}

// Copies `width` floats. The widths of the kernel tiles get a constant-size memcpy, which
// compiles to a few vector moves instead of a library call.
static inline void copy_floats(float *dst, const float *src, int width)
{
    switch (width) {
    case 4:
        memcpy(dst, src, 4 * sizeof(float));
        break;
    case 6:
        memcpy(dst, src, 6 * sizeof(float));
        break;
    case 12:
        memcpy(dst, src, 12 * sizeof(float));
        break;
    case 16:
        memcpy(dst, src, 16 * sizeof(float));
        break;
    case 32:
        memcpy(dst, src, 32 * sizeof(float));
        break;
    default:
        memcpy(dst, src, (size_t)width * sizeof(float));
        break;
    }
}

// Packs columns 0:n of rows 0:depth of src (row stride ld) into panels of `width` columns,
// each `depth` rows of `width` floats, zero-padded on the right. This is the layout of
// A_op when A is transposed and of B_op when B is not.
//
// Panels often lie a multiple of 4 KiB apart, so one row written across all panels would
// hit a single L1 cache set. Each pass therefore fills ROW_BLOCK rows of one panel before
// moving to the next. The rows are read in order, which the hardware prefetcher follows.
// Software prefetches of the next rows, issued in bursts, filled the line-fill buffers and
// made the weight-gradient product 3 % slower.
static void pack_rows(int depth, int n, const float *src, int ld, int width, float *dst)
{
    enum { ROW_BLOCK = 8 };
    int full = n / width;
    int rest = n - full * width;
    size_t panel_floats = (size_t)width * depth;
    for (int k0 = 0; k0 < depth; k0 += ROW_BLOCK) {
        int rows = depth - k0 < ROW_BLOCK ? depth - k0 : ROW_BLOCK;
        const float *block = src + (size_t)k0 * ld;
        float *out = dst + (size_t)k0 * width;
        for (int p = 0; p < full; p++) {
            for (int k = 0; k < rows; k++) {
                copy_floats(out + p * panel_floats + (size_t)k * width,
                            block + (size_t)k * ld + p * width, width);
            }
        }
        for (int k = 0; k < rows && rest > 0; k++) {
            float *tail = out + full * panel_floats + (size_t)k * width;
            memcpy(tail, block + (size_t)k * ld + full * width, (size_t)rest * sizeof(float));
            memset(tail + rest, 0, (size_t)(width - rest) * sizeof(float));
        }
    }
}

// Packs rows 0:n of src (row stride ld), each `depth` floats long, as the columns of panels
// of `width` columns, each `depth` rows of `width` floats, zero-padded on the right. This is
// the layout of A_op when A is not transposed and of B_op when B is. Paths with a faster way
// to build the same layout supply a pack_group kernel, which pack_columns calls instead.
static void pack_columns_portable(int depth, int n, const float *src, int ld, int width,
                                  float *dst)
{
    for (int j0 = 0; j0 < n; j0 += width) {
        int cols = n - j0 < width ? n - j0 : width;
        float *panel = dst + (size_t)j0 * depth;
        for (int j = 0; j < cols; j++) {
            const float *row = src + (size_t)(j0 + j) * ld;
            if (j0 + j + PREFETCH_ROWS < n) {
                prefetch_floats(row + (size_t)PREFETCH_ROWS * ld, depth);
            }
            for (int k = 0; k < depth; k++) {
                panel[(size_t)k * width + j] = row[k];
            }
        }
        for (int k = 0; k < depth && cols < width; k++) {
            memset(panel + (size_t)k * width + cols, 0, (size_t)(width - cols) * sizeof(float));
        }
    }
}

static void pack_columns(const charlstm_gemm_path *path, int depth, int n, const float *src,
                         int ld, int width, float *dst)
{
    if (path->pack_group == NULL) {
        pack_columns_portable(depth, n, src, ld, width, dst);
        return;
    }
    int group = path->pack_group_rows;
    for (int j0 = 0; j0 < n; j0 += width) {
        float *panel = dst + (size_t)j0 * depth;
        for (int g = 0; g < width; g += group) {
            int lanes = width - g < group ? width - g : group;
            int rows = n - j0 - g;
            if (rows > lanes) {
                rows = lanes;
            }
            if (rows < 0) {
                rows = 0;
            }
            path->pack_group(depth, rows, lanes, src + (size_t)(j0 + g) * ld, ld, width,
                             panel + g);
        }
    }
}

// Packs A_op(0:m, 0:kc) into panels of mr rows, each kc groups of mr floats, zero-padded.
static void pack_a(const charlstm_gemm_path *path, int trans_a, int m, int kc, const float *A,
                   int lda, float *dst)
{
    if (trans_a) {
        pack_rows(kc, m, A, lda, path->mr, dst);
    } else {
        pack_columns(path, kc, m, A, lda, path->mr, dst);
    }
}

// Packs B_op(0:kc, 0:n) into panels of nr columns, each kc rows of nr floats, zero-padded.
static void pack_b(const charlstm_gemm_path *path, int trans_b, int kc, int n, const float *B,
                   int ldb, int nr, float *dst)
{
    if (trans_b) {
        pack_columns(path, kc, n, B, ldb, nr, dst);
    } else {
        pack_rows(kc, n, B, ldb, nr, dst);
    }
}

size_t charlstm_gemm_pack_b_size(int K, int N)
{
    if (K <= 0 || N <= 0) {
        return 0;
    }
    size_t panels = ((size_t)N + CHARLSTM_PACK_NR - 1) / CHARLSTM_PACK_NR;
    return panels * CHARLSTM_PACK_NR * (size_t)K * sizeof(float);
}

void charlstm_gemm_pack_b(int K, int N, const float *B, int ldb, float *packed)
{
    if (K > 0 && N > 0) {
        charlstm_kernels_init();
        pack_b(current_path, 0, K, N, B, ldb, CHARLSTM_PACK_NR, packed);
    }
}

size_t charlstm_gemm_pack_bt_size(int K, int N)
{
    return charlstm_gemm_pack_b_size(K, N);
}

void charlstm_gemm_pack_bt(int K, int N, const float *B, int ldb, float *packed)
{
    if (K > 0 && N > 0) {
        charlstm_kernels_init();
        pack_b(current_path, 1, K, N, B, ldb, CHARLSTM_PACK_NR, packed);
    }
}

// ----------------------------------------------------------------------------
// blocked product on one block of C, run by one thread

static _Thread_local float *pack_buffer;
static _Thread_local size_t pack_buffer_floats;

// Returns a thread-local buffer of at least `floats` floats, or NULL if allocation fails.
static float *get_pack_buffer(size_t floats)
{
    if (floats <= pack_buffer_floats) {
        return pack_buffer;
    }
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    float *grown = aligned_alloc(64, bytes);
    if (grown == NULL) {
        return NULL;
    }
    free(pack_buffer);
    pack_buffer = grown;
    pack_buffer_floats = bytes / sizeof(float);
    return pack_buffer;
}

static int round_up(int x, int multiple)
{
    return (x + multiple - 1) / multiple * multiple;
}

// Splits `total` into the fewest blocks of at most `max_block`, of equal size rounded up to a
// multiple of `multiple`, so the last block is not a sliver.
static int balanced_block(int total, int max_block, int multiple)
{
    int blocks = (total + max_block - 1) / max_block;
    return round_up((total + blocks - 1) / blocks, multiple);
}

// C(M,N) (+)= A_op B_op one element at a time: the fallback when no packing buffer can be
// allocated.
static void gemm_unpacked(const gemm_problem *p, int M, int N, int K)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++) {
                float a = p->trans_a ? p->A[(size_t)k * p->lda + i] : p->A[(size_t)i * p->lda + k];
                float b;
                if (p->packed_b) {
                    const float *panel = p->packed_b + (size_t)(j / CHARLSTM_PACK_NR) *
                                                           CHARLSTM_PACK_NR * p->packed_k;
                    b = panel[(size_t)k * CHARLSTM_PACK_NR + j % CHARLSTM_PACK_NR];
                } else {
                    b = p->trans_b ? p->B[(size_t)j * p->ldb + k] : p->B[(size_t)k * p->ldb + j];
                }
                sum += a * b;
            }
            float *c = p->C + (size_t)i * p->ldc + j;
            *c = p->accumulate ? *c + sum : sum;
        }
    }
}

// Location of a kc x nc block of B_op for the micro-kernel: packed panels, or rows of B read
// in place. Column j starts at base + (j / panel_width) * panel_stride + j % panel_width.
typedef struct {
    const float *base;
    int panel_width;
    size_t panel_stride;
    int row_stride;
    // when B is read in place, a zero-padded copy of the columns from edge_column on, which
    // are fewer than nr, so the micro-kernel never reads past the end of a row of B
    const float *edge;
    int edge_column;
} b_block;

// Location of an mc x kc block of A_op for the micro-kernel: packed panels, or A read in
// place. The tile of rows from ir on starts at base + ir * tile_offset, and its element (i,k)
// is at i * row_stride + k * k_stride from there.
typedef struct {
    const float *base;
    size_t tile_offset;
    int row_stride, k_stride;
    int in_place;
} a_block;

// Returns the start of the B columns from jr on and stores their row stride.
static const float *b_columns(const b_block *bb, int jr, int nr, int *b_stride)
{
    if (bb->edge != NULL && jr >= bb->edge_column) {
        *b_stride = nr;
        return bb->edge;
    }
    *b_stride = bb->row_stride;
    return bb->base + (size_t)(jr / bb->panel_width) * bb->panel_stride + jr % bb->panel_width;
}

// Runs the micro-kernel over an A block (mc x kc) and a B block of nc columns.
//
// A packed A block stays in the L2 cache, and each B panel stays in L1 while all row tiles
// pass over it. An A block read in place is not packed, so its rows may share cache sets. In
// that case each row tile goes over all the (few) B panels while it is still in L1.
static void multiply_block(const charlstm_gemm_path *path, int mc, int nc, int kc,
                           const a_block *ab, const b_block *bb, float *C, int ldc,
                           int accumulate)
{
    int mr = path->mr, nr = path->nr;
    if (ab->in_place) {
        for (int ir = 0; ir < mc; ir += mr) {
            int m = mc - ir < mr ? mc - ir : mr;
            const float *a = ab->base + (size_t)ir * ab->tile_offset;
            for (int jr = 0; jr < nc; jr += nr) {
                int n = nc - jr < nr ? nc - jr : nr;
                int b_stride;
                const float *b = b_columns(bb, jr, nr, &b_stride);
                path->micro(m, n, kc, a, ab->row_stride, ab->k_stride, b, b_stride,
                            C + (size_t)ir * ldc + jr, ldc, accumulate);
            }
        }
        return;
    }
    for (int jr = 0; jr < nc; jr += nr) {
        int n = nc - jr < nr ? nc - jr : nr;
        int b_stride;
        const float *b = b_columns(bb, jr, nr, &b_stride);
        for (int ir = 0; ir < mc; ir += mr) {
            int m = mc - ir < mr ? mc - ir : mr;
            path->micro(m, n, kc, ab->base + (size_t)ir * ab->tile_offset, ab->row_stride,
                        ab->k_stride, b, b_stride, C + (size_t)ir * ldc + jr, ldc, accumulate);
        }
    }
}

static void gemm_blocked(const charlstm_gemm_path *path, const gemm_problem *p, int M, int N,
                         int K)
{
    // Non-transposed A is read in place by the micro-kernel (see multiply_block), which saves
    // the packing pass. Transposed A is packed unless N is a few panels wide, because a tile of
    // it read in place spans kc rows of A. A pre-packed B is laid out for whole-N blocks, which
    // stream from memory once per row tile with A in place, so then A is packed too.
    int a_in_place = !p->packed_b && (!p->trans_a || N <= A_IN_PLACE_MAX_N);
    int mc_max = a_in_place ? M : balanced_block(M, path->mc, path->mr);
    int kc_max = balanced_block(K, path->kc, 1);
    int nc_limit = a_in_place && path->nc > A_IN_PLACE_NC ? A_IN_PLACE_NC : path->nc;
    int nc_max = p->packed_b ? 0 : balanced_block(N, nc_limit, path->nr);
    size_t a_floats = a_in_place ? 0 : (size_t)mc_max * kc_max;
    float *buffer = get_pack_buffer(a_floats + (size_t)kc_max * nc_max);
    if (buffer == NULL) {
        gemm_unpacked(p, M, N, K);
        return;
    }
    float *a_packed = buffer;
    float *b_packed = buffer + a_floats;

    int nc_step = p->packed_b ? N : nc_max;
    // With a single row tile each element of B is used once, so nn and tn read B in place.
    // With more tiles, packing pays: rows of B that lie a multiple of 4 KiB apart share cache
    // sets, and the packed panel stays in L1 cache between tiles.
    int b_in_place = !p->packed_b && !p->trans_b && M <= path->mr;
    for (int jc = 0; jc < N; jc += nc_step) {
        int nc = N - jc < nc_step ? N - jc : nc_step;
        for (int pc = 0; pc < K; pc += kc_max) {
            int kc = K - pc < kc_max ? K - pc : kc_max;
            int accumulate = pc == 0 ? p->accumulate : 1;

            // B block: a window into the pre-packed panels, read in place, or packed here
            b_block bb = {.edge = NULL};
            if (p->packed_b) {
                bb.base = p->packed_b + (size_t)pc * CHARLSTM_PACK_NR;
                bb.panel_width = CHARLSTM_PACK_NR;
                bb.panel_stride = (size_t)CHARLSTM_PACK_NR * p->packed_k;
                bb.row_stride = CHARLSTM_PACK_NR;
            } else if (b_in_place) {
                bb.base = p->B + (size_t)pc * p->ldb + jc;
                bb.panel_width = nc;
                bb.panel_stride = 0;
                bb.row_stride = p->ldb;
                bb.edge_column = nc / path->nr * path->nr;
                if (bb.edge_column < nc) {
                    pack_b(path, 0, kc, nc - bb.edge_column, bb.base + bb.edge_column, p->ldb,
                           path->nr, b_packed);
                    bb.edge = b_packed;
                }
            } else {
                const float *B = p->trans_b ? p->B + (size_t)jc * p->ldb + pc
                                            : p->B + (size_t)pc * p->ldb + jc;
                pack_b(path, p->trans_b, kc, nc, B, p->ldb, path->nr, b_packed);
                bb.base = b_packed;
                bb.panel_width = path->nr;
                bb.panel_stride = (size_t)path->nr * kc;
                bb.row_stride = path->nr;
            }

            for (int ic = 0; ic < M; ic += mc_max) {
                int mc = M - ic < mc_max ? M - ic : mc_max;
                const float *A = p->trans_a ? p->A + (size_t)pc * p->lda + ic
                                            : p->A + (size_t)ic * p->lda + pc;
                a_block ab = {.base = A, .in_place = a_in_place};
                if (!a_in_place) {
                    pack_a(path, p->trans_a, mc, kc, A, p->lda, a_packed);
                    ab.base = a_packed;
                    ab.tile_offset = (size_t)kc;
                    ab.row_stride = 1;
                    ab.k_stride = path->mr;
                } else if (p->trans_a) {
                    ab.tile_offset = 1;
                    ab.row_stride = 1;
                    ab.k_stride = p->lda;
                } else {
                    ab.tile_offset = (size_t)p->lda;
                    ab.row_stride = p->lda;
                    ab.k_stride = 1;
                }
                multiply_block(path, mc, nc, kc, &ab, &bb, p->C + (size_t)ic * p->ldc + jc,
                               p->ldc, accumulate);
            }
        }
    }
}

// Computes C(M,N) for a single row of A with the vector-matrix kernels.
static void gemv(const charlstm_gemm_path *path, const gemm_problem *p, int N, int K)
{
    if (p->packed_b) {
        path->gemv_packed(N, K, p->A, p->packed_b, p->C, p->accumulate);
    } else if (p->trans_b) {
        path->gemv_t(N, K, p->A, p->B, p->ldb, p->C, p->accumulate);
    } else {
        // Blocks of rows keep the strip of B that one chunk of y reads small enough for the
        // cache. A single sweep over all K rows at a row stride of a few KiB maps the strip
        // onto few cache sets, which evicts it before the next call.
        enum { ROWS_PER_BLOCK = 128 };
        int incx = p->trans_a ? p->lda : 1;
        for (int k0 = 0; k0 < K; k0 += ROWS_PER_BLOCK) {
            int rows = K - k0 < ROWS_PER_BLOCK ? K - k0 : ROWS_PER_BLOCK;
            int accumulate = k0 == 0 ? p->accumulate : 1;
            path->gemv_n(N, rows, p->A + (size_t)k0 * incx, incx, p->B + (size_t)k0 * p->ldb,
                         p->ldb, p->C, accumulate);
        }
    }
}

// ----------------------------------------------------------------------------
// threads: each thread computes a disjoint block of rows or columns of C

// Returns the problem restricted to rows [m0, ...) and columns [n0, ...) of C.
static gemm_problem sub_problem(const gemm_problem *p, int m0, int n0)
{
    gemm_problem s = *p;
    s.A = p->trans_a ? p->A + m0 : p->A + (size_t)m0 * p->lda;
    if (p->packed_b) {
        // n0 is a multiple of CHARLSTM_PACK_NR here, so the block starts at a panel
        s.packed_b = p->packed_b + (size_t)n0 * p->packed_k;
    } else {
        s.B = p->trans_b ? p->B + (size_t)n0 * p->ldb : p->B + n0;
    }
    s.C = p->C + (size_t)m0 * p->ldc + n0;
    return s;
}

static void compute_block(const charlstm_gemm_path *path, const gemm_problem *p, int M, int N,
                          int K)
{
    if (M == 1) {
        gemv(path, p, N, K);
    } else {
        gemm_blocked(path, p, M, N, K);
    }
}

static void run_product(gemm_problem *p, int M, int N, int K)
{
    if (M <= 0 || N <= 0) {
        return;
    }
    if (K <= 0) {
        for (int i = 0; i < M && !p->accumulate; i++) {
            memset(p->C + (size_t)i * p->ldc, 0, (size_t)N * sizeof(float));
        }
        return;
    }
    charlstm_kernels_init();
    const charlstm_gemm_path *path = current_path;

    // split rows when there are enough for every thread, else columns in whole packed panels
    int row_unit = M == 1 ? 1 : path->mr;
    int row_units = (M + row_unit - 1) / row_unit;
    int col_units = (N + CHARLSTM_PACK_NR - 1) / CHARLSTM_PACK_NR;
    int threads = charlstm_get_num_threads();
#ifdef _OPENMP
    // A product called inside a parallel region runs on the calling thread, which already
    // has its share of the work.
    if (omp_in_parallel()) {
        threads = 1;
    }
#endif
    double flops = 2.0 * M * N * K;
    if (threads > flops / MIN_FLOPS_PER_THREAD) {
        threads = (int)(flops / MIN_FLOPS_PER_THREAD);
    }
    int split_rows = M > 1 && row_units >= 2 * threads && M >= N / 2;
    int units = split_rows ? row_units : col_units;
    if (threads > units) {
        threads = units;
    }
    if (threads <= 1) {
        compute_block(path, p, M, N, K);
        return;
    }

#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        int count = omp_get_num_threads();
        int begin = (int)((long long)units * t / count);
        int end = (int)((long long)units * (t + 1) / count);
        if (split_rows) {
            int m0 = begin * row_unit;
            int m1 = end * row_unit < M ? end * row_unit : M;
            gemm_problem s = sub_problem(p, m0, 0);
            if (m1 > m0) {
                compute_block(path, &s, m1 - m0, N, K);
            }
        } else {
            int n0 = begin * CHARLSTM_PACK_NR;
            int n1 = end * CHARLSTM_PACK_NR < N ? end * CHARLSTM_PACK_NR : N;
            gemm_problem s = sub_problem(p, 0, n0);
            if (n1 > n0) {
                compute_block(path, &s, M, n1 - n0, K);
            }
        }
    }
#else
    compute_block(path, p, M, N, K);
#endif
}

// ----------------------------------------------------------------------------
// public entry points

void charlstm_gemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate)
{
    gemm_problem p = {.A = A, .lda = lda, .B = B, .ldb = ldb, .C = C, .ldc = ldc,
                      .accumulate = accumulate};
    run_product(&p, M, N, K);
}

void charlstm_gemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate)
{
    gemm_problem p = {.trans_b = 1, .A = A, .lda = lda, .B = B, .ldb = ldb, .C = C, .ldc = ldc,
                      .accumulate = accumulate};
    run_product(&p, M, N, K);
}

void charlstm_gemm_tn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate)
{
    gemm_problem p = {.trans_a = 1, .A = A, .lda = lda, .B = B, .ldb = ldb, .C = C, .ldc = ldc,
                      .accumulate = accumulate};
    run_product(&p, M, N, K);
}

void charlstm_gemm_nn_packed(int M, int N, int K, const float *A, int lda, const float *packed,
                             float *C, int ldc, int accumulate)
{
    gemm_problem p = {.A = A, .lda = lda, .packed_b = packed, .packed_k = K, .C = C, .ldc = ldc,
                      .accumulate = accumulate};
    run_product(&p, M, N, K);
}

void charlstm_gemm_nt_packed(int M, int N, int K, const float *A, int lda, const float *packed,
                             float *C, int ldc, int accumulate)
{
    // pack_bt produced the layout of B^T, so this is the nn product on it
    charlstm_gemm_nn_packed(M, N, K, A, lda, packed, C, ldc, accumulate);
}
