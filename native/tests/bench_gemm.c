// Benchmarks the matrix products at the LSTM engine's shapes, per kernel path and thread count,
// next to a measured FMA peak.
//
// Usage: bench_gemm [path ...], where a path is avx512, avx2 or portable (default: all).
// Each number comes from the fastest single call in 3 batches of calls, and each batch lasts
// at least 0.1 s. With 1 thread a call is timed by the thread's CPU-time clock, which leaves
// out time the thread spends preempted, so that other processes on a shared machine disturb
// the result less. With more threads the wall clock is used. Shared or throttled machines
// still vary from run to run, so compare ratios within one run.
#include "gemm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define BENCH_X86 1
#endif

enum product { NN, NT, TN, NN_PACKED, NT_PACKED };

typedef struct {
    const char *label;
    enum product product;
    int M, N, K, accumulate;
} bench_shape;

// B = batch, T = steps, H = hidden size, V = vocabulary size
static const bench_shape shapes[] = {
    {"x->gates nn T*B=2048 H=256", NN, 2048, 1024, 256, 0},
    {"x->gates nn T*B=6400 H=512", NN, 6400, 2048, 512, 0},
    {"h->gates nn B=32 H=512", NN, 32, 2048, 512, 1},
    {"h->gates packed B=32 H=256", NN_PACKED, 32, 1024, 256, 1},
    {"h->gates packed B=32 H=512", NN_PACKED, 32, 2048, 512, 1},
    {"h->gates packed B=64 H=512", NN_PACKED, 64, 2048, 512, 1},
    {"h->gates nn B=1 H=256", NN, 1, 1024, 256, 1},
    {"h->gates nn B=1 H=512", NN, 1, 2048, 512, 1},
    {"h->gates packed B=1 H=256", NN_PACKED, 1, 1024, 256, 1},
    {"h->gates packed B=1 H=512", NN_PACKED, 1, 2048, 512, 1},
    {"dh nt packed B=32 H=512", NT_PACKED, 32, 512, 2048, 1},
    {"dh nt packed B=64 H=512", NT_PACKED, 64, 512, 2048, 1},
    {"dh nt B=1 H=512", NT, 1, 512, 2048, 1},
    {"dx nt T*B=2048 H=512", NT, 2048, 512, 2048, 0},
    {"dW tn H=512 T*B=2048", TN, 512, 2048, 2048, 1},
    {"dW tn H=512 T*B=6400", TN, 512, 2048, 6400, 1},
    {"logits nn T*B=2048 V=65", NN, 2048, 65, 512, 0},
    {"dWy tn V=65 T*B=2048", TN, 512, 65, 2048, 1},
    {"dh nt V=65 T*B=2048", NT, 2048, 512, 65, 0},
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Returns the CPU time of the calling thread in seconds.
static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *random_floats(size_t n)
{
    // aligned to 64 bytes as the engine allocates its buffers, because packed panels load
    // fastest at that alignment
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *x = aligned_alloc(64, bytes > 0 ? bytes : 64);
    if (x == NULL) {
        fprintf(stderr, "bench_gemm: out of memory allocating %zu floats\n", n);
        exit(2);
    }
    uint32_t state = 12345u;
    for (size_t i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)(state >> 8) / 16777216.0f - 0.5f;
    }
    return x;
}

// ----------------------------------------------------------------------------
// FMA peak: independent accumulator chains, so throughput rather than latency limits the loop

#ifdef BENCH_X86
__attribute__((target("avx512f"))) static float fma_loop_avx512(long iterations)
{
    __m512 acc[16];
    __m512 scale = _mm512_set1_ps(0.999999f), offset = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < 16; j++) {
        acc[j] = _mm512_set1_ps((float)j);
    }
    for (long it = 0; it < iterations; it++) {
        for (int j = 0; j < 16; j++) {
            acc[j] = _mm512_fmadd_ps(acc[j], scale, offset);
        }
    }
    for (int j = 1; j < 16; j++) {
        acc[0] = _mm512_add_ps(acc[0], acc[j]);
    }
    return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iterations)
{
    __m256 acc[12];
    __m256 scale = _mm256_set1_ps(0.999999f), offset = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < 12; j++) {
        acc[j] = _mm256_set1_ps((float)j);
    }
    for (long it = 0; it < iterations; it++) {
        for (int j = 0; j < 12; j++) {
            acc[j] = _mm256_fmadd_ps(acc[j], scale, offset);
        }
    }
    for (int j = 1; j < 12; j++) {
        acc[0] = _mm256_add_ps(acc[0], acc[j]);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc[0]);
    return lanes[0] + lanes[7];
}
#endif

static volatile float peak_sink;

// Returns the FMA peak in GFLOP/s of `threads` threads for a path, or 0 if it has no FMA loop.
static double measure_peak(const char *path, int threads)
{
    double best = 0.0;
#ifdef BENCH_X86
    int wide = strcmp(path, "avx512") == 0;
    if (!wide && strcmp(path, "avx2") != 0) {
        return 0.0;
    }
    long iterations = 20000000;
    double flops_per_iteration = wide ? 16 * 16 * 2 : 12 * 8 * 2;
    double (*clock_seconds)(void) = threads == 1 ? thread_cpu_seconds : now_seconds;
    for (int rep = 0; rep < 3; rep++) {
        double start = clock_seconds();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
        {
            float r = wide ? fma_loop_avx512(iterations) : fma_loop_avx2(iterations);
            peak_sink = r;
        }
        double seconds = clock_seconds() - start;
        double gflops = threads * iterations * flops_per_iteration / seconds * 1e-9;
        best = gflops > best ? gflops : best;
    }
#else
    (void)path;
    (void)threads;
#endif
    return best;
}

// ----------------------------------------------------------------------------
// products

static void run_product(const bench_shape *s, const float *A, const float *B,
                        const float *packed, float *C)
{
    int lda = s->product == TN ? s->M : s->K;
    int ldb = s->product == NT ? s->K : s->N;
    switch (s->product) {
    case NN:
        charlstm_gemm_nn(s->M, s->N, s->K, A, lda, B, ldb, C, s->N, s->accumulate);
        break;
    case NT:
        charlstm_gemm_nt(s->M, s->N, s->K, A, lda, B, ldb, C, s->N, s->accumulate);
        break;
    case TN:
        charlstm_gemm_tn(s->M, s->N, s->K, A, lda, B, ldb, C, s->N, s->accumulate);
        break;
    case NN_PACKED:
        charlstm_gemm_nn_packed(s->M, s->N, s->K, A, lda, packed, C, s->N, s->accumulate);
        break;
    case NT_PACKED:
        charlstm_gemm_nt_packed(s->M, s->N, s->K, A, lda, packed, C, s->N, s->accumulate);
        break;
    }
}

// Returns the GFLOP/s of the fastest call over 3 batches of calls.
static double measure_shape(const bench_shape *s, int threads)
{
    size_t a_size = (size_t)s->M * s->K, b_size = (size_t)s->K * s->N;
    float *A = random_floats(a_size);
    float *B = random_floats(b_size);
    float *C = random_floats((size_t)s->M * s->N);
    float *packed = random_floats(charlstm_gemm_pack_b_size(s->K, s->N) / sizeof(float));
    if (s->product == NN_PACKED) {
        charlstm_gemm_pack_b(s->K, s->N, B, s->N, packed);
    } else if (s->product == NT_PACKED) {
        charlstm_gemm_pack_bt(s->K, s->N, B, s->K, packed);
    }

    double flops = 2.0 * s->M * s->N * s->K;
    run_product(s, A, B, packed, C);
    double start = now_seconds();
    run_product(s, A, B, packed, C);
    double once = now_seconds() - start;
    long calls = (long)(0.1 / (once > 1e-7 ? once : 1e-7)) + 1;

    double (*clock_seconds)(void) = threads == 1 ? thread_cpu_seconds : now_seconds;
    double fastest = 1e30;
    for (int batch = 0; batch < 3; batch++) {
        for (long c = 0; c < calls; c++) {
            double call_start = clock_seconds();
            run_product(s, A, B, packed, C);
            double seconds = clock_seconds() - call_start;
            fastest = seconds < fastest ? seconds : fastest;
        }
    }
    double best = flops / (fastest > 1e-9 ? fastest : 1e-9) * 1e-9;
    free(A);
    free(B);
    free(C);
    free(packed);
    return best;
}

static void bench_path(const char *path)
{
    if (charlstm_kernels_force(path) != 0) {
        printf("\n%s: not supported by this CPU or build, skipped\n", path);
        return;
    }
    int max_threads = charlstm_get_num_threads();
    for (int threads = 1; threads <= max_threads; threads++) {
        double peak = measure_peak(path, threads);
        printf("\npath %s, %d thread%s, FMA-loop peak %.1f GFLOP/s, calls timed by %s\n", path,
               threads, threads > 1 ? "s" : "", peak,
               threads == 1 ? "thread CPU time" : "wall clock");
        printf("%-30s %6s %6s %6s %9s %8s\n", "shape", "M", "N", "K", "GFLOP/s", "of peak");
        charlstm_set_num_threads(threads);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const bench_shape *s = &shapes[i];
            double gflops = measure_shape(s, threads);
            printf("%-30s %6d %6d %6d %9.1f", s->label, s->M, s->N, s->K, gflops);
            if (peak > 0.0) {
                printf(" %7.0f%%", 100.0 * gflops / peak);
            }
            printf("\n");
            fflush(stdout);
        }
    }
    charlstm_set_num_threads(0);
}

int main(int argc, char **argv)
{
    static const char *const all_paths[] = {"avx512", "avx2", "portable"};
    charlstm_kernels_init();
    printf("default kernel path: %s, threads: %d\n", charlstm_kernels_name(),
           charlstm_get_num_threads());
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            bench_path(argv[i]);
        }
    } else {
        for (size_t i = 0; i < sizeof all_paths / sizeof all_paths[0]; i++) {
            bench_path(all_paths[i]);
        }
    }
    return 0;
}
