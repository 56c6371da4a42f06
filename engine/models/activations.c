/* ELU of float32 rows on AVX2 and FMA: x where x > 0 (or NaN), e^x − 1 elsewhere
 * (vector_exp.h), eight at a time.
 *
 * Each of Mimi's convolutions but the first follows an ELU over a frame's thousands of samples
 * of tens of channels, for every stream of a batch; PyTorch's ELU took as long per value as
 * its exponential, several times this one. The values are written where the caller wants them
 * (a convolution's input, after the samples that precede it), so each row of y has its own
 * place. Threads take runs of values.
 */
#include <immintrin.h>
#include <stdint.h>

#include "vector_exp.h"

enum { RUN = 4096 }; /* values a thread takes at a time */

/* y[r · y_stride + i] = ELU(x[r · count + i]) for rows r, i < count. */
void elu_rows(const float *x, float *y, int64_t rows, int64_t count, int64_t y_stride) {
    const int64_t runs = (count + RUN - 1) / RUN;
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < rows * runs; job++) {
        const int64_t r = job / runs, from = job % runs * RUN;
        const int64_t to = from + RUN < count ? from + RUN : count;
        const float *in = x + r * count;
        float *out = y + r * y_stride;
        int64_t i = from;
        for (; i + 8 <= to; i += 8) {
            const __m256 v = _mm256_loadu_ps(in + i);
            const __m256 kept = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NLE_UQ);
            _mm256_storeu_ps(out + i, _mm256_blendv_ps(expm1_below_zero(v), v, kept));
        }
        if (i < to) { /* the last few through a zero-padded vector */
            float lanes[8] = {0};
            for (int64_t k = i; k < to; k++) lanes[k - i] = in[k];
            const __m256 v = _mm256_loadu_ps(lanes);
            const __m256 kept = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NLE_UQ);
            _mm256_storeu_ps(lanes, _mm256_blendv_ps(expm1_below_zero(v), v, kept));
            for (int64_t k = i; k < to; k++) out[k] = lanes[k - i];
        }
    }
}
