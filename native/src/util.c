/* Library-wide helpers: RNG, error messages, aligned memory, version info. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "internal.h"

#ifndef CHARLSTM_VERSION_STRING
#define CHARLSTM_VERSION_STRING "0.0.0"
#endif

// ----------------------------------------------------------------------------
// random numbers

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(rng_state *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(rng_state *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float rng_uniform(rng_state *rng) {
    return (float)(rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

// ----------------------------------------------------------------------------
// errors and memory

static _Thread_local char init_error[CHARLSTM_ERROR_SIZE];

charlstm_status set_error(char *dst, charlstm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, CHARLSTM_ERROR_SIZE, fmt, ap);
    va_end(ap);
    return status;
}

charlstm_status set_init_error(charlstm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(init_error, CHARLSTM_ERROR_SIZE, fmt, ap);
    va_end(ap);
    return status;
}

const char *charlstm_last_init_error(void) { return init_error; }

float *alloc_floats(size_t n) {
    if (n > (SIZE_MAX - 63) / sizeof(float)) return NULL;
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void free_floats(float *p) { free(p); }

// ----------------------------------------------------------------------------
// library information

int32_t charlstm_abi_version(void) { return CHARLSTM_ABI_VERSION; }

const char *charlstm_version(void) { return CHARLSTM_VERSION_STRING; }

size_t charlstm_sizeof(const char *struct_name) {
    if (!struct_name) return 0;
    if (strcmp(struct_name, "model_config") == 0) return sizeof(charlstm_model_config);
    if (strcmp(struct_name, "train_config") == 0) return sizeof(charlstm_train_config);
    if (strcmp(struct_name, "tensor_info") == 0) return sizeof(charlstm_tensor_info);
    return 0;
}

const char *charlstm_status_str(charlstm_status status) {
    switch (status) {
    case CHARLSTM_OK: return "ok";
    case CHARLSTM_INVALID_ARG: return "invalid argument";
    case CHARLSTM_NOMEM: return "out of memory";
    case CHARLSTM_NONFINITE: return "non-finite value";
    }
    return "unknown status";
}

const char *charlstm_kernel_name(void) {
    charlstm_kernels_init();
    return charlstm_kernels_name();
}

charlstm_status charlstm_kernel_force(const char *name) {
    if (!name) return CHARLSTM_INVALID_ARG;
    charlstm_kernels_init();
    return charlstm_kernels_force(name) == 0 ? CHARLSTM_OK : CHARLSTM_INVALID_ARG;
}
