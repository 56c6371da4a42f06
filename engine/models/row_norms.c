/* RMSNorm of float32 rows, on AVX2 and FMA: y = x · (mean(x²) + eps)^-½ · weight.
 *
 * A streaming step normalizes one row of a few thousand values twice per layer; PyTorch runs
 * that as half a dozen dispatched operations, each costing more than the arithmetic. Squares
 * are summed in float32 in eight lanes, then the lanes in order.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* x, y [rows, width]; weight [width]. */
void rms_norm_rows(const float *x, const float *weight, float *y, int rows, int width,
                   float eps) {
    for (int r = 0; r < rows; r++) {
        const float *row = x + (int64_t)r * width;
        float *out = y + (int64_t)r * width;
        __m256 squares = _mm256_setzero_ps();
        int k = 0;
        for (; k + 8 <= width; k += 8) {
            const __m256 v = _mm256_loadu_ps(row + k);
            squares = _mm256_fmadd_ps(v, v, squares);
        }
        float lanes[8], total = 0.0f;
        _mm256_storeu_ps(lanes, squares);
        for (int l = 0; l < 8; l++) total += lanes[l];
        for (; k < width; k++) total += row[k] * row[k];
        const float scale = 1.0f / sqrtf(total / width + eps);
        const __m256 scales = _mm256_set1_ps(scale);
        for (k = 0; k + 8 <= width; k += 8)
            _mm256_storeu_ps(out + k, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(row + k), scales),
                                                    _mm256_loadu_ps(weight + k)));
        for (; k < width; k++) out[k] = row[k] * scale * weight[k];
    }
}
