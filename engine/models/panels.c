/* y = x · Wᵀ for a matrix held in panels of 8 outputs, on AVX2 and FMA: float32 or bfloat16
 * weights, or int8 codes with a float32 scale per run of inputs.
 *
 * A streaming step multiplies a few rows by every weight once, so it should take as long as
 * reading the weights. Each tile turns a panel's 8 weights for one input into float32 once
 * (an int8 code times its scale, a bfloat16 shifted into place: both exact) and multiplies
 * them by that input of every row in the tile (broadcast): the weights are read from memory
 * once however many rows there are, and each row's input once per 8 outputs. Sums are
 * float32, in input order, for each output, whatever the tile or thread.
 *
 * Layout: panels[p][k][j] is the weight of output 8p + j for input k (⌈out / 8⌉ panels of
 * in × 8 weights, contiguous); int8's scales[p][g][j] its scale for inputs g·group to
 * (g + 1)·group. Threads split the panels (OpenMP, the runtime PyTorch runs on, so its
 * thread count applies and no second pool competes for the cores).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

enum { INT8, BFLOAT16, FLOAT32 };

/* The 8 weights of one panel for one input (`at`: their first element), as float32. */
static inline __attribute__((always_inline)) __m256 weights_at(
    const void *panels, int64_t at, const float *scale, const int KIND) {
    if (KIND == FLOAT32) return _mm256_loadu_ps((const float *)panels + at);
    if (KIND == BFLOAT16) {
        __m128i halves = _mm_loadu_si128((const __m128i *)((const uint16_t *)panels + at));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
    }
    __m128i codes = _mm_loadl_epi64((const __m128i *)((const int8_t *)panels + at));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes)), _mm256_loadu_ps(scale));
}

/* ROWS rows of x times PANELS panels from `panel`; all constants where it is inlined, so the
 * sums stay in registers (ROWS × PANELS ≤ 12 of the 16). */
static inline __attribute__((always_inline)) void tile(
    const float *x, const void *panels, const float *scales, float *y, int panel, int out,
    int in, int group, const int ROWS, const int PANELS, const int KIND) {
    __m256 sums[4][6];
    for (int r = 0; r < ROWS; r++)
        for (int p = 0; p < PANELS; p++) sums[r][p] = _mm256_setzero_ps();
    const int groups = (in + group - 1) / group;
    const int64_t first = (int64_t)panel * 8 * in;
    const float *scale = KIND == INT8 ? scales + (int64_t)panel * 8 * groups : 0;
    for (int g = 0, k = 0; g < groups; g++) {
        const int end = k + group < in ? k + group : in;
        for (; k < end; k++) {
            __m256 weights[6];
            for (int p = 0; p < PANELS; p++)
                weights[p] = weights_at(panels, first + (int64_t)p * 8 * in + 8 * k,
                                        KIND == INT8 ? scale + ((int64_t)p * groups + g) * 8 : 0,
                                        KIND);
            for (int r = 0; r < ROWS; r++) {
                __m256 value = _mm256_broadcast_ss(x + (int64_t)r * in + k);
                for (int p = 0; p < PANELS; p++)
                    sums[r][p] = _mm256_fmadd_ps(value, weights[p], sums[r][p]);
            }
        }
    }
    for (int p = 0; p < PANELS; p++) {
        const int start = 8 * (panel + p), count = out - start < 8 ? out - start : 8;
        for (int r = 0; r < ROWS; r++) {
            if (count == 8) {
                _mm256_storeu_ps(y + (int64_t)r * out + start, sums[r][p]);
            } else { /* the last panel of a matrix whose outputs are not a multiple of 8 */
                float lanes[8];
                _mm256_storeu_ps(lanes, sums[r][p]);
                memcpy(y + (int64_t)r * out + start, lanes, count * sizeof(float));
            }
        }
    }
}

/* Every row against groups of PANELS panels, ROWS rows at a time (single rows for the rest);
 * panels past the last whole group one by one. */
#define TILES(ROWS, PANELS, KIND)                                                             \
    do {                                                                                      \
        const int whole = count / (PANELS);                                                   \
        _Pragma("omp parallel for schedule(static)")                                          \
        for (int g = 0; g < whole; g++) {                                                     \
            int r = 0;                                                                        \
            for (; r + (ROWS) <= rows; r += (ROWS))                                           \
                tile(x + (int64_t)r * in, panels, scales, y + (int64_t)r * out, g * (PANELS), \
                     out, in, group, ROWS, PANELS, KIND);                                     \
            for (; r < rows; r++)                                                             \
                tile(x + (int64_t)r * in, panels, scales, y + (int64_t)r * out, g * (PANELS), \
                     out, in, group, 1, PANELS, KIND);                                        \
        }                                                                                     \
        for (int p = whole * (PANELS); p < count; p++)                                        \
            for (int r = 0; r < rows; r++)                                                    \
                tile(x + (int64_t)r * in, panels, scales, y + (int64_t)r * out, p, out, in,   \
                     group, 1, 1, KIND);                                                      \
    } while (0)

/* Few rows: wide tiles keep enough sums in flight; more: four rows share each weight. */
#define ALL_ROWS(KIND)                   \
    do {                                 \
        if (rows < 4)                    \
            TILES(2, 6, KIND);           \
        else                             \
            TILES(4, 3, KIND);           \
    } while (0)

/* x [rows, in] float32, panels [⌈out / 8⌉, in, 8] of `kind`'s weights, scales (int8 only)
 * [⌈out / 8⌉, ⌈in / group⌉, 8] float32 → y [rows, out] float32. */
void panels_mm(const float *x, const void *panels, const float *scales, float *y, int rows,
               int out, int in, int group, int kind) {
    const int count = (out + 7) / 8;
    if (kind == INT8)
        ALL_ROWS(INT8);
    else if (kind == BFLOAT16)
        ALL_ROWS(BFLOAT16);
    else
        ALL_ROWS(FLOAT32);
}
