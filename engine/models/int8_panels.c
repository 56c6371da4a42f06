/* y = x · Wᵀ for int8 codes with a float32 scale per run of inputs, held in panels of 8
 * outputs, on AVX2 and FMA.
 *
 * A streaming step multiplies a few rows by every weight once, so it should take as long as
 * reading the codes. Each tile widens a panel's 8 codes for one input to float32 once, scales
 * them (a code times a bfloat16-exact or float32 scale: the weight's float32 value), and
 * multiplies them by that input of every row in the tile (broadcast): the codes are read from
 * memory once however many rows there are, and each row's input once per 8 outputs. Sums are
 * float32, in input order, for each output.
 *
 * Layout: panels[p][k][j] is the code of output 8p + j for input k (⌈out / 8⌉ panels of
 * in × 8 codes, contiguous); scales[p][g][j] its scale for inputs g·group to (g + 1)·group.
 * Threads split the panels (OpenMP, the runtime PyTorch runs on, so its thread count applies
 * and no second pool competes for the cores).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static inline __m256 widen(const int8_t *codes) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)codes)));
}

/* ROWS rows of x times PANELS panels from `panel`; both are constants where it is inlined,
 * so the accumulators stay in registers (ROWS × PANELS ≤ 12 of the 16). */
static inline __attribute__((always_inline)) void tile(
    const float *x, const int8_t *panels, const float *scales, float *y, int panel, int out,
    int in, int group, const int ROWS, const int PANELS) {
    __m256 sums[4][6];
    for (int r = 0; r < ROWS; r++)
        for (int p = 0; p < PANELS; p++) sums[r][p] = _mm256_setzero_ps();
    const int groups = (in + group - 1) / group;
    const int8_t *codes = panels + (int64_t)panel * 8 * in;
    const float *scale = scales + (int64_t)panel * 8 * groups;
    for (int g = 0, k = 0; g < groups; g++) {
        const int end = k + group < in ? k + group : in;
        for (; k < end; k++) {
            __m256 weights[6];
            for (int p = 0; p < PANELS; p++)
                weights[p] = _mm256_mul_ps(widen(codes + (int64_t)p * 8 * in + 8 * k),
                                           _mm256_loadu_ps(scale + ((int64_t)p * groups + g) * 8));
            for (int r = 0; r < ROWS; r++) {
                __m256 value = _mm256_broadcast_ss(x + (int64_t)r * in + k);
                for (int p = 0; p < PANELS; p++)
                    sums[r][p] = _mm256_fmadd_ps(value, weights[p], sums[r][p]);
            }
        }
    }
    for (int p = 0; p < PANELS; p++) {
        const int first = 8 * (panel + p), count = out - first < 8 ? out - first : 8;
        for (int r = 0; r < ROWS; r++) {
            if (count == 8) {
                _mm256_storeu_ps(y + (int64_t)r * out + first, sums[r][p]);
            } else { /* the last panel of a matrix whose outputs are not a multiple of 8 */
                float lanes[8];
                _mm256_storeu_ps(lanes, sums[r][p]);
                memcpy(y + (int64_t)r * out + first, lanes, count * sizeof(float));
            }
        }
    }
}

/* Every row against groups of PANELS panels, ROWS rows at a time (single rows for the rest);
 * panels past the last whole group one by one. */
#define TILES(ROWS, PANELS)                                                                   \
    do {                                                                                      \
        int groups = count / (PANELS);                                                        \
        _Pragma("omp parallel for schedule(static)")                                          \
        for (int g = 0; g < groups; g++) {                                                    \
            int r = 0;                                                                        \
            for (; r + (ROWS) <= rows; r += (ROWS))                                           \
                tile(x + (int64_t)r * in, panels, scales, y + (int64_t)r * out, g * (PANELS), \
                     out, in, group, ROWS, PANELS);                                                  \
            for (; r < rows; r++)                                                             \
                tile(x + (int64_t)r * in, panels, scales, y + (int64_t)r * out, g * (PANELS), \
                     out, in, group, 1, PANELS);                                                     \
        }                                                                                     \
        for (int p = groups * (PANELS); p < count; p++)                                       \
            for (int r = 0; r < rows; r++)                                                    \
                tile(x + (int64_t)r * in, panels, scales, y + (int64_t)r * out, p, out, in, group, \
                     1, 1);                                                                      \
    } while (0)

/* x [rows, in] float32, panels [⌈out / 8⌉, in, 8] int8, scales [⌈out / 8⌉, ⌈in / group⌉, 8]
 * float32 → y [rows, out]. */
void int8_panels_mm(const float *x, const int8_t *panels, const float *scales, float *y,
                    int rows, int out, int in, int group) {
    int count = (out + 7) / 8;
    if (rows < 4)
        TILES(2, 6); /* few rows: wide tiles keep enough sums in flight */
    else
        TILES(4, 3);
}
