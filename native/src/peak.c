// Measured FMA peak of this processor, the yardstick for the GFLOP/s that benchmarks report.
//
// Each thread runs a loop of fused multiply-adds on many independent accumulators, so the
// loop is bound by the FMA units' throughput, not by the latency of one chain. The loop uses
// the instruction set of the kernel path in use (avx512, avx2 or portable C), so a forced path
// is compared with its own peak. Same approach as native/tests/bench_gemm.c.
#include <string.h>
#include <time.h>

#include "gemm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef CHARLSTM_GEMM_X86
#include <immintrin.h>
#endif

// Independent accumulator vectors per thread: enough to cover 4-cycle FMA latency on two
// ports (8 needed), with margin for processors with longer latency.
#define PEAK_CHAINS 16

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ----------------------------------------------------------------------------
// FMA loops: each returns a sum of its accumulators so the compiler keeps the work

#ifdef CHARLSTM_GEMM_X86
__attribute__((target("avx512f"))) static float fma_loop_avx512(long iterations)
{
    __m512 acc[PEAK_CHAINS];
    __m512 scale = _mm512_set1_ps(0.999999f), offset = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (long it = 0; it < iterations; it++) {
        for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], scale, offset);
    }
    for (int j = 1; j < PEAK_CHAINS; j++) acc[0] = _mm512_add_ps(acc[0], acc[j]);
    return _mm512_reduce_add_ps(acc[0]);
}

// 12 chains, because AVX2 has 16 ymm registers and two hold the constants.
__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iterations)
{
    __m256 acc[12];
    __m256 scale = _mm256_set1_ps(0.999999f), offset = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_ps((float)j);
    for (long it = 0; it < iterations; it++) {
        for (int j = 0; j < 12; j++) acc[j] = _mm256_fmadd_ps(acc[j], scale, offset);
    }
    for (int j = 1; j < 12; j++) acc[0] = _mm256_add_ps(acc[0], acc[j]);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc[0]);
    return lanes[0] + lanes[7];
}
#endif

// Plain C with constant bounds, which gcc -O3 vectorizes for the baseline instruction set, as
// it does the portable matrix kernels. Each element counts as one multiply and one add.
static float fma_loop_portable(long iterations)
{
    float acc[PEAK_CHAINS * 8];
    for (int j = 0; j < PEAK_CHAINS * 8; j++) acc[j] = (float)j;
    for (long it = 0; it < iterations; it++) {
        for (int j = 0; j < PEAK_CHAINS * 8; j++) acc[j] = acc[j] * 0.999999f + 1e-7f;
    }
    float sum = 0.0f;
    for (int j = 0; j < PEAK_CHAINS * 8; j++) sum += acc[j];
    return sum;
}

// ----------------------------------------------------------------------------
// measurement

typedef float (*fma_loop)(long iterations);

static volatile float peak_sink;

// Returns the wall time of `iterations` loop iterations on each of n_threads threads.
static double time_loop(fma_loop loop, long iterations, int n_threads)
{
    double start = now_seconds();
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#else
    (void)n_threads;
#endif
    {
        peak_sink = loop(iterations);
    }
    return now_seconds() - start;
}

double charlstm_measure_peak_gflops(int32_t n_threads, double seconds)
{
    const char *path = charlstm_kernels_name();
    fma_loop loop = fma_loop_portable;
    double flops_per_iteration = 2.0 * PEAK_CHAINS * 8;
#ifdef CHARLSTM_GEMM_X86
    if (strcmp(path, "avx512") == 0) {
        loop = fma_loop_avx512;
        flops_per_iteration = 2.0 * PEAK_CHAINS * 16;
    } else if (strcmp(path, "avx2") == 0) {
        loop = fma_loop_avx2;
        flops_per_iteration = 2.0 * 12 * 8;
    }
#else
    (void)path;
#endif
    if (n_threads <= 0) n_threads = charlstm_get_num_threads();
    if (seconds < 1e-3) seconds = 1e-3;

    // calibrate on a short run, then split the budget into 3 repetitions and keep the best
    long iterations = 10000;
    double elapsed = time_loop(loop, iterations, n_threads);
    while (elapsed < 1e-3) {
        iterations *= 4;
        elapsed = time_loop(loop, iterations, n_threads);
    }
    long per_rep = (long)((double)iterations * (seconds / 3.0) / elapsed) + 1;
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double rep_seconds = time_loop(loop, per_rep, n_threads);
        double gflops = n_threads * (double)per_rep * flops_per_iteration / rep_seconds * 1e-9;
        best = gflops > best ? gflops : best;
    }
    return best;
}
