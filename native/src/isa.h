/* Per-ISA compilation of plain C loops. */
#ifndef CHARLSTM_ISA_H
#define CHARLSTM_ISA_H

/* Compiles a function for AVX-512, AVX2 and baseline x86-64, and lets the
 * loader pick the best one for the processor (gcc target_clones). Apply it
 * to leaf loops only: OpenMP outlines parallel bodies into new functions
 * that do not inherit the clones. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONE_FOR_ISA \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONE_FOR_ISA
#endif

#endif /* CHARLSTM_ISA_H */
