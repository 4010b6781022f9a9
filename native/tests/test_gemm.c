// Checks every matrix-product kernel path against a double-precision triple loop.
//
// Forces each path this CPU supports in turn. Covers the products nn, nt, tn and nn/nt with a
// pre-packed B (and the packed layout itself), 1 and 2 threads, overwrite and accumulate, and row strides with and without
// padding. Compares C element by element and checks that the padding between rows of C is
// untouched. Also checks that repeated runs and both thread counts give bit-identical results.
// Prints each failure and exits non-zero if any check fails.
#include "gemm.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum product { NN, NT, TN, NN_PACKED, NT_PACKED, PRODUCT_COUNT };
static const char *const product_names[] = {"nn", "nt", "tn", "nn_packed", "nt_packed"};

static int failures;
static int checks;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

// ----------------------------------------------------------------------------
// helpers

static uint32_t next_random(void)
{
    // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static int random_int(int lo, int hi)
{
    return lo + (int)(next_random() % (uint32_t)(hi - lo + 1));
}

static void fill_uniform(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)next_random() / 4294967296.0f * 2.0f - 1.0f;
    }
}

static float *alloc_floats(size_t n)
{
    float *p = malloc((n > 0 ? n : 1) * sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "test_gemm: out of memory allocating %zu floats\n", n);
        exit(2);
    }
    return p;
}

// One product with its operands; A and B are stored as the product reads them.
typedef struct {
    enum product product;
    int M, N, K, lda, ldb, ldc, accumulate;
    float *A, *B, *C0;
} gemm_case;

static float a_at(const gemm_case *t, int i, int k)
{
    return t->product == TN ? t->A[(size_t)k * t->lda + i] : t->A[(size_t)i * t->lda + k];
}

static float b_at(const gemm_case *t, int k, int j)
{
    int transposed = t->product == NT || t->product == NT_PACKED;
    return transposed ? t->B[(size_t)j * t->ldb + k] : t->B[(size_t)k * t->ldb + j];
}

static void make_case(gemm_case *t, enum product product, int M, int N, int K, int pad,
                      int accumulate)
{
    t->product = product;
    t->M = M;
    t->N = N;
    t->K = K;
    t->accumulate = accumulate;
    int a_rows = product == TN ? K : M;
    int a_cols = product == TN ? M : K;
    int b_rows = (product == NT || product == NT_PACKED) ? N : K;
    int b_cols = (product == NT || product == NT_PACKED) ? K : N;
    t->lda = a_cols + pad;
    t->ldb = b_cols + pad;
    t->ldc = N + pad;
    t->A = alloc_floats((size_t)a_rows * t->lda);
    t->B = alloc_floats((size_t)b_rows * t->ldb);
    t->C0 = alloc_floats((size_t)M * t->ldc);
    fill_uniform(t->A, (size_t)a_rows * t->lda);
    fill_uniform(t->B, (size_t)b_rows * t->ldb);
    fill_uniform(t->C0, (size_t)M * t->ldc);
    if (!accumulate) {
        // overwrite must never read C: NaN would leak into the result
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                t->C0[(size_t)i * t->ldc + j] = NAN;
            }
        }
    }
}

static void free_case(gemm_case *t)
{
    free(t->A);
    free(t->B);
    free(t->C0);
}

// Returns B packed for the pre-packed products, or NULL for the others.
static float *pack_case(const gemm_case *t)
{
    if (t->product != NN_PACKED && t->product != NT_PACKED) {
        return NULL;
    }
    size_t bytes = t->product == NN_PACKED ? charlstm_gemm_pack_b_size(t->K, t->N)
                                           : charlstm_gemm_pack_bt_size(t->K, t->N);
    float *packed = alloc_floats(bytes / sizeof(float));
    if (t->product == NN_PACKED) {
        charlstm_gemm_pack_b(t->K, t->N, t->B, t->ldb, packed);
    } else {
        charlstm_gemm_pack_bt(t->K, t->N, t->B, t->ldb, packed);
    }
    return packed;
}

// Runs the product under test for rows m0:m1 of C.
static void run_rows(const gemm_case *t, const float *packed, int m0, int m1, float *C)
{
    int M = m1 - m0;
    const float *A = t->product == TN ? t->A + m0 : t->A + (size_t)m0 * t->lda;
    C += (size_t)m0 * t->ldc;
    switch (t->product) {
    case NN:
        charlstm_gemm_nn(M, t->N, t->K, A, t->lda, t->B, t->ldb, C, t->ldc, t->accumulate);
        break;
    case NT:
        charlstm_gemm_nt(M, t->N, t->K, A, t->lda, t->B, t->ldb, C, t->ldc, t->accumulate);
        break;
    case TN:
        charlstm_gemm_tn(M, t->N, t->K, A, t->lda, t->B, t->ldb, C, t->ldc, t->accumulate);
        break;
    case NN_PACKED:
        charlstm_gemm_nn_packed(M, t->N, t->K, A, t->lda, packed, C, t->ldc, t->accumulate);
        break;
    case NT_PACKED:
        charlstm_gemm_nt_packed(M, t->N, t->K, A, t->lda, packed, C, t->ldc, t->accumulate);
        break;
    default:
        break;
    }
}

// Runs the product under test on a copy of C0 and returns it.
static float *run_case(const gemm_case *t)
{
    float *C = alloc_floats((size_t)t->M * t->ldc);
    memcpy(C, t->C0, (size_t)t->M * t->ldc * sizeof(float));
    float *packed = pack_case(t);
    run_rows(t, packed, 0, t->M, C);
    free(packed);
    return C;
}

// Runs the product under test on a copy of C0 as `parts` calls on consecutive row blocks,
// made by the threads of one parallel region, and returns it.
static float *run_case_in_parts(const gemm_case *t, int parts)
{
    float *C = alloc_floats((size_t)t->M * t->ldc);
    memcpy(C, t->C0, (size_t)t->M * t->ldc * sizeof(float));
    float *packed = pack_case(t);
#pragma omp parallel for num_threads(parts) schedule(static)
    for (int part = 0; part < parts; part++) {
        run_rows(t, packed, t->M * part / parts, t->M * (part + 1) / parts, C);
    }
    free(packed);
    return C;
}

// ----------------------------------------------------------------------------
// checks

// Compares C with the double-precision product. Each float sum of K products (plus C0 when
// accumulating) is within (K + 2) * FLT_EPSILON * sum(|terms|) of the exact value whatever
// the summation order, so that is the tolerance.
static void check_case(const gemm_case *t, const float *C, const char *label)
{
    int reported = 0;
    checks++;
    for (int i = 0; i < t->M; i++) {
        for (int j = 0; j < t->N; j++) {
            double exact = 0.0;
            double magnitude = 0.0;
            if (t->accumulate) {
                exact = t->C0[(size_t)i * t->ldc + j];
                magnitude = fabs(exact);
            }
            for (int k = 0; k < t->K; k++) {
                double term = (double)a_at(t, i, k) * (double)b_at(t, k, j);
                exact += term;
                magnitude += fabs(term);
            }
            double tolerance = (t->K + 2) * (double)FLT_EPSILON * magnitude;
            float got = C[(size_t)i * t->ldc + j];
            if (!(fabs(got - exact) <= tolerance) && reported < 3) {
                printf("FAIL %s: C[%d][%d] = %.9g, expected %.9g (tolerance %.3g)\n", label, i,
                       j, got, exact, tolerance);
                reported++;
            }
        }
        for (int j = t->N; j < t->ldc; j++) {
            size_t at = (size_t)i * t->ldc + j;
            if (memcmp(&C[at], &t->C0[at], sizeof(float)) != 0 && reported < 3) {
                printf("FAIL %s: padding C[%d][%d] changed from %.9g to %.9g\n", label, i, j,
                       t->C0[at], C[at]);
                reported++;
            }
        }
    }
    // one failure per case; only the first three bad elements are printed
    if (reported > 0) {
        failures++;
    }
}

static void check_bitwise_equal(const gemm_case *t, const float *C1, const float *C2,
                                const char *label)
{
    checks++;
    for (size_t at = 0; at < (size_t)t->M * t->ldc; at++) {
        if (memcmp(&C1[at], &C2[at], sizeof(float)) != 0) {
            printf("FAIL %s: element %zu differs: %.9g vs %.9g\n", label, at, C1[at], C2[at]);
            failures++;
            return;
        }
    }
}

// Checks one shape for every product, overwrite and accumulate, on the current path.
static void check_shape(const char *path, int threads, int M, int N, int K, int pad)
{
    for (int product = 0; product < PRODUCT_COUNT; product++) {
        for (int accumulate = 0; accumulate <= 1; accumulate++) {
            gemm_case t;
            make_case(&t, (enum product)product, M, N, K, pad, accumulate);
            char label[160];
            snprintf(label, sizeof label, "path=%s threads=%d %s M=%d N=%d K=%d pad=%d acc=%d",
                     path, threads, product_names[product], M, N, K, pad, accumulate);
            charlstm_set_num_threads(threads);
            float *C = run_case(&t);
            check_case(&t, C, label);
            free(C);
            free_case(&t);
        }
    }
}

// Checks that a product repeats bit for bit, and matches between 1 and 2 threads.
static void check_determinism(const char *path, int M, int N, int K)
{
    for (int product = 0; product < PRODUCT_COUNT; product++) {
        gemm_case t;
        make_case(&t, (enum product)product, M, N, K, 1, 1);
        char label[160];
        snprintf(label, sizeof label, "path=%s %s M=%d N=%d K=%d", path,
                 product_names[product], M, N, K);
        char repeat_label[200], threads_label[200];
        snprintf(repeat_label, sizeof repeat_label, "repeat with 2 threads %s", label);
        snprintf(threads_label, sizeof threads_label, "1 vs 2 threads %s", label);

        charlstm_set_num_threads(2);
        float *first = run_case(&t);
        float *second = run_case(&t);
        charlstm_set_num_threads(1);
        float *single = run_case(&t);
        check_bitwise_equal(&t, first, second, repeat_label);
        check_bitwise_equal(&t, first, single, threads_label);
        free(first);
        free(second);
        free(single);
        free_case(&t);
    }
}

// Checks that splitting the rows over calls made at once from the threads of a parallel
// region gives the same bits as one call, as the LSTM recurrence relies on.
static void check_row_split(const char *path, int M, int N, int K, int parts)
{
    for (int product = 0; product < PRODUCT_COUNT; product++) {
        gemm_case t;
        make_case(&t, (enum product)product, M, N, K, 1, 1);
        char label[160];
        snprintf(label, sizeof label, "path=%s %s M=%d N=%d K=%d in %d row blocks", path,
                 product_names[product], M, N, K, parts);
        charlstm_set_num_threads(2);
        float *whole = run_case(&t);
        float *split = run_case_in_parts(&t, parts);
        check_bitwise_equal(&t, whole, split, label);
        free(whole);
        free(split);
        free_case(&t);
    }
}

// Checks the packed layout itself, padding included, against the documented one: panel j/32
// contains row k of column j at k * 32 + j % 32, and columns past N are zero.
static void check_pack_layout(const char *path, int transposed, int K, int N)
{
    int ld = (transposed ? K : N) + 3;
    float *B = alloc_floats((size_t)(transposed ? N : K) * ld);
    fill_uniform(B, (size_t)(transposed ? N : K) * ld);
    size_t floats = charlstm_gemm_pack_b_size(K, N) / sizeof(float);
    float *packed = alloc_floats(floats);
    memset(packed, 0xFF, floats * sizeof(float)); // NaN everywhere until written
    if (transposed) {
        charlstm_gemm_pack_bt(K, N, B, ld, packed);
    } else {
        charlstm_gemm_pack_b(K, N, B, ld, packed);
    }
    int wrong = 0;
    int panels = (N + CHARLSTM_PACK_NR - 1) / CHARLSTM_PACK_NR;
    for (int j = 0; j < panels * CHARLSTM_PACK_NR && !wrong; j++) {
        for (int k = 0; k < K; k++) {
            float expected = 0.0f;
            if (j < N) {
                expected = transposed ? B[(size_t)j * ld + k] : B[(size_t)k * ld + j];
            }
            size_t at = (size_t)(j / CHARLSTM_PACK_NR) * CHARLSTM_PACK_NR * K +
                        (size_t)k * CHARLSTM_PACK_NR + j % CHARLSTM_PACK_NR;
            if (memcmp(&packed[at], &expected, sizeof(float)) != 0) {
                printf("FAIL path=%s pack_%s K=%d N=%d: column %d row %d is %g, expected %g\n",
                       path, transposed ? "bt" : "b", K, N, j, k, packed[at], expected);
                wrong = 1;
                break;
            }
        }
    }
    checks++;
    failures += wrong;
    free(B);
    free(packed);
}

static void check_path(const char *path)
{
    static const int pack_shapes[][2] = {{1, 1}, {15, 33}, {16, 32}, {17, 100}, {300, 65}};
    for (size_t s = 0; s < sizeof pack_shapes / sizeof pack_shapes[0]; s++) {
        check_pack_layout(path, 0, pack_shapes[s][0], pack_shapes[s][1]);
        check_pack_layout(path, 1, pack_shapes[s][0], pack_shapes[s][1]);
    }
    static const int edge_shapes[][3] = {
        {1, 1, 1},      {1, 1024, 256}, {1, 65, 512},   {1, 4001, 600}, {1, 97, 1},
        {70, 1, 70},    {37, 53, 1},    {2, 2048, 300}, {32, 1024, 256}, {64, 100, 256},
        {128, 65, 513}, {300, 1030, 257},
    };
    for (int threads = 1; threads <= 2; threads++) {
        for (size_t s = 0; s < sizeof edge_shapes / sizeof edge_shapes[0]; s++) {
            const int *shape = edge_shapes[s];
            check_shape(path, threads, shape[0], shape[1], shape[2], 0);
            check_shape(path, threads, shape[0], shape[1], shape[2], 3);
        }
        for (int r = 0; r < 60; r++) {
            int M = random_int(1, 70), N = random_int(1, 70), K = random_int(1, 70);
            check_shape(path, threads, M, N, K, random_int(0, 5));
        }
    }
    check_determinism(path, 300, 1030, 257);
    check_determinism(path, 1, 4001, 600);
    check_determinism(path, 64, 2048, 512);
    check_row_split(path, 64, 2048, 512, 2);
    check_row_split(path, 64, 512, 2048, 2);
    check_row_split(path, 7, 300, 40, 3);
}

// ----------------------------------------------------------------------------
// zero depth and kernel selection

static void check_zero_depth(void)
{
    float A[1] = {1.0f}, B[1] = {1.0f};
    float C[6] = {NAN, NAN, NAN, 7.0f, 7.0f, 7.0f};
    checks++;
    charlstm_gemm_nn(1, 3, 0, A, 1, B, 3, C, 3, 0);
    charlstm_gemm_nn(1, 3, 0, A, 1, B, 3, C + 3, 3, 1);
    for (int j = 0; j < 3; j++) {
        if (C[j] != 0.0f || C[3 + j] != 7.0f) {
            printf("FAIL K=0: overwrite gave %g (expected 0), accumulate gave %g (expected 7)\n",
                   C[j], C[3 + j]);
            failures++;
            return;
        }
    }
}

static void check_kernel_selection(void)
{
    const char *before = charlstm_kernels_name();
    checks++;
    if (charlstm_kernels_force("no-such-path") != -1) {
        printf("FAIL charlstm_kernels_force(\"no-such-path\") did not return -1\n");
        failures++;
    }
    checks++;
    if (strcmp(charlstm_kernels_name(), before) != 0) {
        printf("FAIL rejected force changed the path from %s to %s\n", before,
               charlstm_kernels_name());
        failures++;
    }
    checks++;
    if (charlstm_kernels_force("portable") != 0) {
        printf("FAIL charlstm_kernels_force(\"portable\") failed\n");
        failures++;
    }
}

int main(void)
{
    static const char *const paths[] = {"avx512", "avx2", "portable"};
    charlstm_kernels_init();
    printf("default kernel path: %s\n", charlstm_kernels_name());
    check_kernel_selection();
    check_zero_depth();

    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        if (charlstm_kernels_force(paths[p]) != 0) {
            printf("SKIP path=%s: not supported by this CPU or build\n", paths[p]);
            continue;
        }
        int failures_before = failures;
        check_path(paths[p]);
        printf("path=%s: %s\n", paths[p], failures == failures_before ? "ok" : "FAILED");
    }

    printf("%d of %d checks failed\n", failures, checks);
    return failures == 0 ? 0 : 1;
}
