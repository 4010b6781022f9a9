# Test and benchmark executables for the matrix-product kernels (native/src/gemm*.c).
# The top-level CMakeLists.txt includes this file when tests are enabled, after
# find_package(OpenMP) if OpenMP is wanted. The gemm functions have hidden visibility in the
# shared library, so the executables link a static copy of the kernel sources instead.

set(CHARLSTM_GEMM_DIR ${CMAKE_CURRENT_LIST_DIR}/../src)

add_library(charlstm_gemm_static STATIC
    ${CHARLSTM_GEMM_DIR}/gemm.c
    ${CHARLSTM_GEMM_DIR}/gemm_avx2.c
    ${CHARLSTM_GEMM_DIR}/gemm_avx512.c
)
target_include_directories(charlstm_gemm_static PUBLIC ${CHARLSTM_GEMM_DIR}
    ${CMAKE_CURRENT_LIST_DIR}/../include)
set_target_properties(charlstm_gemm_static PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON)
target_compile_options(charlstm_gemm_static PRIVATE $<$<C_COMPILER_ID:GNU,Clang>:-O3>)
if(TARGET OpenMP::OpenMP_C)
    target_link_libraries(charlstm_gemm_static PUBLIC OpenMP::OpenMP_C)
endif()

add_executable(test_gemm ${CMAKE_CURRENT_LIST_DIR}/test_gemm.c)
target_link_libraries(test_gemm PRIVATE charlstm_gemm_static m)
add_test(NAME gemm COMMAND test_gemm)

# Not a test: prints GFLOP/s per kernel path and thread count. Run it by hand.
add_executable(bench_gemm ${CMAKE_CURRENT_LIST_DIR}/bench_gemm.c)
target_link_libraries(bench_gemm PRIVATE charlstm_gemm_static m)
