// Internal single-precision matrix products for the LSTM engine (not part of the public API).
//
// All matrices are row-major float32. `ld*` arguments are row strides in elements and must be
// at least the row length of the matrix as stored. `accumulate` is 0 (C = product) or
// 1 (C += product). Only the M x N block of C is written; padding between rows is untouched.
// K == 0 gives a zero product.
//
// Kernels: charlstm_kernels_init() picks the fastest instruction set the CPU supports (avx512,
// avx2 or portable C) once. The environment variable CHARLSTM_KERNEL=avx512|avx2|portable
// requests one; an unknown or unsupported value falls back to the best supported path, and
// charlstm_kernels_name() reports the path in use. Every product calls charlstm_kernels_init()
// itself if it has not run yet.
//
// Threads: each call starts an OpenMP parallel region of up to charlstm_get_num_threads()
// threads when the product is large enough. Threads split C into disjoint blocks and every
// element of C is summed in the same order whatever the block split, so results are
// bit-identical from run to run and between thread counts, for a fixed kernel path. Different
// paths round differently. The order does not depend on M either, except that a single row
// (M == 1) takes the vector-matrix kernels, which sum in another order. So splitting the rows
// of A over several calls of at least 2 rows each gives the same bits. A call made inside an
// OpenMP parallel region runs on the calling thread alone, so the threads of a region may each
// run their own products at once. Calls must not run concurrently with
// charlstm_set_num_threads or charlstm_kernels_force, because the thread count and kernel
// choice are process-wide.
//
// Memory: packing buffers are thread-local and grow when a larger product needs them, so the
// first call of a given size allocates and later calls do not. If that allocation fails the
// product still completes through a slower unpacked loop.
#ifndef CHARLSTM_GEMM_H
#define CHARLSTM_GEMM_H

#include <stddef.h>

#include "charlstm.h" // exports charlstm_set_num_threads and charlstm_get_num_threads

// ----------------------------------------------------------------------------
// products

// C(M,N) = A(M,K) B(K,N)
void charlstm_gemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate);
// C(M,N) = A(M,K) B(N,K)^T
void charlstm_gemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate);
// C(M,N) = A(K,M)^T B(K,N)
void charlstm_gemm_tn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float *C, int ldc, int accumulate);

// ----------------------------------------------------------------------------
// pre-packed right-hand operand, for a weight matrix used by many products in a row (the
// recurrent step runs T products with the same weights)
//
// The packed layout is the same for every kernel path: ceil(N/32) panels of K rows x 32
// columns, zero-padded on the right. A packed buffer stays valid after charlstm_kernels_force()
// or a change of thread count. It must be packed again only when the source matrix changes,
// which is after every optimizer step. Any alignment works, but 64 bytes is fastest.

// Returns the size in bytes of the buffer that charlstm_gemm_pack_b(K, N, ...) fills.
size_t charlstm_gemm_pack_b_size(int K, int N);
// Packs B(K,N) with row stride ldb into packed (charlstm_gemm_pack_b_size(K, N) bytes).
void charlstm_gemm_pack_b(int K, int N, const float *B, int ldb, float *packed);
// C(M,N) = A(M,K) B(K,N), with B packed by charlstm_gemm_pack_b(K, N, ...).
void charlstm_gemm_nn_packed(int M, int N, int K, const float *A, int lda, const float *packed,
                             float *C, int ldc, int accumulate);

// Returns the size in bytes of the buffer that charlstm_gemm_pack_bt(K, N, ...) fills.
size_t charlstm_gemm_pack_bt_size(int K, int N);
// Packs B^T for B(N,K) with row stride ldb: the same layout as charlstm_gemm_pack_b of the
// transposed (K,N) matrix.
void charlstm_gemm_pack_bt(int K, int N, const float *B, int ldb, float *packed);
// C(M,N) = A(M,K) B(N,K)^T, with B packed by charlstm_gemm_pack_bt(K, N, ...).
void charlstm_gemm_nt_packed(int M, int N, int K, const float *A, int lda, const float *packed,
                             float *C, int ldc, int accumulate);

// ----------------------------------------------------------------------------
// kernel selection and threads

// Selects the kernel path once (see the top of this file). Later calls do nothing.
void charlstm_kernels_init(void);
// Returns "avx512", "avx2" or "portable": the path products use now.
const char *charlstm_kernels_name(void);
// Switches to the named path, for tests and benchmarks. Returns 0 on success, or -1 if the name
// is unknown or this CPU lacks the instructions, in which case the current path stays.
int charlstm_kernels_force(const char *name);
// Sets the maximum number of threads per product; n <= 0 means all processors
// (omp_get_num_procs). Without OpenMP every product runs on the calling thread.
void charlstm_set_num_threads(int n);
// Returns the maximum number of threads a product may use.
int charlstm_get_num_threads(void);

// ----------------------------------------------------------------------------
// kernel paths (used by gemm.c and the per-ISA files only)

// Micro-kernel: C(m,n) (+)= A_tile B_panel over kc steps, with m <= mr and n <= nr.
// Element (i,k) of the A tile is a[i * a_row_stride + k * a_k_stride], and only rows i < m
// are read. A packed A panel has a_row_stride 1 and a_k_stride mr. b contains kc rows of nr
// floats at stride b_stride, where columns j >= n are readable padding.
typedef void (*charlstm_micro_kernel)(int m, int n, int kc, const float *a, int a_row_stride,
                                      int a_k_stride, const float *b, int b_stride, float *c,
                                      int ldc, int accumulate);
// y(N) (+)= sum_k x[k*incx] B(k,:), B(K,N) with row stride ldb: a vector-matrix product.
typedef void (*charlstm_gemv_n_kernel)(int N, int K, const float *x, int incx, const float *B,
                                       int ldb, float *y, int accumulate);
// y(N) (+)= B(N,K) x(K): one dot product per row of B.
typedef void (*charlstm_gemv_t_kernel)(int N, int K, const float *x, const float *B, int ldb,
                                       float *y, int accumulate);
// y(N) (+)= x(K) B(K,N) with B in the packed layout (panels of 32 columns).
typedef void (*charlstm_gemv_packed_kernel)(int N, int K, const float *x, const float *packed,
                                            float *y, int accumulate);

// Packs `rows` rows of src (row stride ld), each `depth` floats, as columns 0:lanes of one
// panel at dst, whose rows are `width` floats apart. Columns from `rows` on are zeros. Both
// rows and lanes are at most the path's pack_group_rows.
typedef void (*charlstm_pack_group_kernel)(int depth, int rows, int lanes, const float *src,
                                           int ld, int width, float *dst);

typedef struct {
    const char *name;
    int mr, nr;     // micro-kernel tile; 32 must be a multiple of nr
    int kc, mc, nc; // cache blocks: depth, rows of packed A, columns of packed B
    charlstm_micro_kernel micro;
    charlstm_gemv_n_kernel gemv_n;
    charlstm_gemv_t_kernel gemv_t;
    charlstm_gemv_packed_kernel gemv_packed;
    // packing by transposition of pack_group_rows rows at a time; NULL: one float at a time
    charlstm_pack_group_kernel pack_group;
    int pack_group_rows;
} charlstm_gemm_path;

// Columns per panel of the pre-packed layout.
#define CHARLSTM_PACK_NR 32

extern const charlstm_gemm_path charlstm_gemm_path_portable;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CHARLSTM_GEMM_X86 1
extern const charlstm_gemm_path charlstm_gemm_path_avx2;
extern const charlstm_gemm_path charlstm_gemm_path_avx512;
#endif

#endif // CHARLSTM_GEMM_H
