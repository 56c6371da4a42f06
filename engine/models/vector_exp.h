/* e^x and e^x − 1 for eight x ≤ 0 at a time, on AVX2 and FMA, shared by the kernels that
 * exponentiate (ring_attention.c's softmax, activations.c's ELU).
 *
 * Cephes' single-precision polynomial after x = n ln 2 + r (|r| ≤ ln 2 / 2) gives
 * e^r − 1 = r + r² P(r) within 2 ulp; then e^x = 2ⁿ (e^r − 1) + 2ⁿ and
 * e^x − 1 = 2ⁿ (e^r − 1) + (2ⁿ − 1), one fused multiply-add each (2ⁿ − 1 is exact), so
 * e^x − 1 keeps its relative accuracy near 0, where 1 subtracted from e^x would not. x below
 * −87 (e^x no longer a normal float) counts as −87. */
#ifndef VECTOR_EXP_H
#define VECTOR_EXP_H
#include <immintrin.h>

/* e^r − 1 of x's remainder r; `power` gets 2ⁿ. */
static inline __m256 exp_remainder(__m256 x, __m256 *power) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 poly = _mm256_set1_ps(1.9875691500e-4f);
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.3981999507e-3f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(8.3334519073e-3f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(4.1665795894e-2f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.6666665459e-1f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(5.0000001201e-1f));
    *power = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    return _mm256_fmadd_ps(poly, _mm256_mul_ps(r, r), r);
}

/* e^x for x ≤ 0. */
static inline __m256 exp_below_zero(__m256 x) {
    __m256 power;
    const __m256 less_one = exp_remainder(x, &power);
    return _mm256_fmadd_ps(less_one, power, power);
}

/* e^x − 1 for x ≤ 0. */
static inline __m256 expm1_below_zero(__m256 x) {
    __m256 power;
    const __m256 less_one = exp_remainder(x, &power);
    return _mm256_fmadd_ps(less_one, power, _mm256_sub_ps(power, _mm256_set1_ps(1.0f)));
}
#endif
