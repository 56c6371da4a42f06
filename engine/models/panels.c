/* y = x · Wᵀ for a matrix held in panels of 8 outputs, on AVX2 and FMA (AVX-512, VNNI and
 * BF16 where the CPU has them): float32 or bfloat16 weights, or int8 codes with a bfloat16
 * scale per run of inputs.
 *
 * int8 codes meet the rows as integers: each row's run of `group` inputs is rounded to 16-bit
 * codes (its largest |x| at ±32767: a relative step of 2⁻¹⁵, finer than bfloat16's 2⁻⁸), and
 * AVX2's vpmaddwd multiplies a pair of inputs by 8 outputs' pair of codes and adds them in
 * int32, exactly (a run's sum stays below 2³¹). Each run's integer sum is then scaled by the
 * codes' and the activations' steps into the float32 sum, run after run. Widening a code to
 * int16 is one instruction per 16 and each multiply does 16 products, where widening to
 * float32 took three per 8 and an FMA does 8: past a few rows the product is compute-bound.
 * Where the CPU has VNNI the multiply and the addition are one instruction, and with AVX-512
 * each register holds two panels' codes for a pair of inputs (32 products a multiply): the
 * same integer sums, so the same outputs.
 *
 * A streaming step multiplies a few rows by every weight once, so it should take as long as
 * reading the weights. Each tile widens a panel's 8 weights for one input once (float32 as
 * they are, a bfloat16 shifted into place: exact; int8 codes to int16) and multiplies them by
 * that input of every row in the tile (broadcast): the weights are read from memory once
 * however many rows there are, and each row's input once per 8 outputs. Sums are in input
 * order for each output, whatever the tile or thread.
 *
 * Layout: panels[p][k][j] is the weight of output 8p + j for input k (⌈out / 8⌉ panels of
 * in × 8 weights, contiguous); int8 codes pair their inputs, codes[p][q][2j + t] being output
 * 8p + j's for input 2q + t (⌈in / 2⌉ pairs, a missing last input zero), and scales[p][g][j]
 * is its scale for inputs g·group to (g + 1)·group. Float panels also convolve: the rows are
 * then a channels-last input's windows, read where they lie (panels_windows). Threads split
 * the panels, and a convolution's thousands of rows in blocks (OpenMP, the
 * runtime PyTorch runs on, so its thread count applies and no second pool competes for the
 * cores), taking two tiles at a time as they come free rather than fixed halves: a thread
 * whose core is shared with other work (Mimi's encoder beside the LM step) takes fewer, so
 * the product does not wait for it. Where scratch memory cannot be had, every output is NaN
 * (codes -1): never a silently wrong product.
 */
#if defined(__GNUC__) && !defined(__clang__)
/* GCC 12's partial redundancy elimination copied each of the int8 tile's integer sums through
 * a second register at every step (24 moves beside 12 multiplies). */
#pragma GCC optimize("no-tree-pre")
#endif
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { INT8, BFLOAT16, FLOAT32 };

/* The 8 weights of one panel for one input (`at`: their first element), as float32. */
static inline __attribute__((always_inline)) __m256 weights_at(const void *panels, int64_t at,
                                                               const int KIND) {
    if (KIND == FLOAT32) return _mm256_loadu_ps((const float *)panels + at);
    __m128i halves = _mm_loadu_si128((const __m128i *)((const uint16_t *)panels + at));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

/* The mask of a panel's first `count` lanes (none where count <= 0, all past 8), as AVX2's
 * masked loads and stores take it: masked-off lanes are neither read nor written. */
static inline __attribute__((always_inline)) __m256i lanes_below(int count) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
}

/* Panel `panel`'s 8 sums into y (a row's outputs), short where the matrix's outputs end
 * inside it: a masked store (a copy through a buffer was a call to memcpy per panel and row,
 * which costs as much as the products where a tile has few inputs). */
static inline __attribute__((always_inline)) void store_panel(float *y, __m256 sums, int panel,
                                                              int out) {
    const int start = 8 * panel;
    if (out - start >= 8)
        _mm256_storeu_ps(y + start, sums);
    else
        _mm256_maskstore_ps(y + start, lanes_below(out - start), sums);
}

/* Rows r of `sums` (PANELS panels from `panel`) into y. */
static inline __attribute__((always_inline)) void store(
    float *y, __m256 sums[4][6], int panel, int out, const int ROWS, const int PANELS) {
    for (int r = 0; r < ROWS; r++)
        for (int p = 0; p < PANELS; p++)
            store_panel(y + (int64_t)r * out, sums[r][p], panel + p, out);
}

#if defined(__AVX512F__)
/* One row's PANELS panels from `panel` into y: panel p's 8 sums in half p % 2 of sums[p / 2]
 * (a 512-bit register holds two panels' outputs). */
static inline __attribute__((always_inline)) void store_row(float *y, const __m512 *sums,
                                                            int panel, int out, const int PANELS) {
    for (int p = 0; p < PANELS; p++)
        store_panel(y,
                    p % 2 ? _mm256_castsi256_ps(
                                _mm512_extracti64x4_epi64(_mm512_castps_si512(sums[p / 2]), 1))
                          : _mm512_castps512_ps256(sums[p / 2]),
                    panel + p, out);
}
#endif

/* Where the rows of a float product lie: row r at base + (r / per) · outer + (r % per) · step.
 * A matrix's rows: per = all of them, step = its width. A convolution's windows, read where
 * they lie in its channels-last input [streams, span, channels] (a window of `kernel` samples
 * is kernel · channels contiguous floats, so it needs no copy): per = a stream's windows,
 * outer = span · channels, step = stride · channels. */
typedef struct {
    const float *base;
    int64_t per, outer, step;
} Rows;

static inline const float *row_at(Rows x, int64_t r) {
    return x.base + (r / x.per) * x.outer + (r % x.per) * x.step;
}

/* The 8 biases of panel `panel` (zero past `out`, or where there is no bias). */
static inline __attribute__((always_inline)) __m256 bias_at(const float *bias, int panel,
                                                            int out) {
    if (!bias) return _mm256_setzero_ps();
    return _mm256_maskload_ps(bias + 8 * panel, lanes_below(out - 8 * panel));
}

/* ROWS rows of x from row r0 times PANELS float panels from `panel`, plus bias (NULL: none);
 * all constants where it is inlined, so the sums stay in registers (ROWS × PANELS ≤ 12 of the
 * 16). */
static inline __attribute__((always_inline)) void tile(
    Rows x, int64_t r0, const void *panels, const float *bias, float *y, int panel, int out,
    int in, const int ROWS, const int PANELS, const int KIND) {
    __m256 sums[4][6];
    const float *row[4];
    for (int r = 0; r < ROWS; r++) row[r] = row_at(x, r0 + r);
    for (int p = 0; p < PANELS; p++) sums[0][p] = bias_at(bias, panel + p, out);
    for (int r = 1; r < ROWS; r++)
        for (int p = 0; p < PANELS; p++) sums[r][p] = sums[0][p];
    const int64_t first = (int64_t)panel * 8 * in;
    for (int k = 0; k < in; k++) {
        __m256 weights[6];
        for (int p = 0; p < PANELS; p++)
            weights[p] = weights_at(panels, first + (int64_t)p * 8 * in + 8 * k, KIND);
        for (int r = 0; r < ROWS; r++) {
            __m256 value = _mm256_broadcast_ss(row[r] + k);
            for (int p = 0; p < PANELS; p++)
                sums[r][p] = _mm256_fmadd_ps(value, weights[p], sums[r][p]);
        }
    }
    store(y, sums, panel, out, ROWS, PANELS);
}

#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define NATIVE_BFLOAT16 1
/* bfloat16 weights where the CPU multiplies bfloat16 pairs itself (vdpbf16ps: two products
 * added into a float32 sum, 32 a 512-bit instruction, where widening and an FMA took three
 * instructions per 8). A row meets them as up to three bfloat16 parts, x rounded, then what
 * that missed rounded, then the rest: their sum is x exactly (8 + 8 + 8 significant bits), and
 * rows already in bfloat16 (a bfloat16 model's activations) need the first part only. Each
 * output adds, input pair after input pair, each part's two products: the same operations
 * whatever the tile, so a row's sums still do not depend on the rows beside it. */

/* x's parts [rows][3][2 · pairs] (a missing last input zero) → how many are needed: 1 where
 * every row is already bfloat16, else 2 or 3. */
static int bfloat16_parts(const float *x, int rows, int in, int pairs, uint16_t *parts) {
    int needed = 1;
    for (int r = 0; r < rows; r++) {
        uint16_t *part = parts + (int64_t)r * 3 * 2 * pairs;
        for (int k = 0; k < 2 * pairs; k += 16) {
            const int real = in - k, padded = 2 * pairs - k;
            const __mmask16 inside = _cvtu32_mask16(real >= 16 ? 0xFFFF : (1u << real) - 1);
            const __mmask16 held = _cvtu32_mask16(padded >= 16 ? 0xFFFF : (1u << padded) - 1);
            __m512 left = _mm512_maskz_loadu_ps(inside, x + (int64_t)r * in + k);
            for (int p = 0; p < 3; p++) {
                const __m256i codes = (__m256i)_mm512_cvtneps_pbh(left);
                _mm256_mask_storeu_epi16(part + (int64_t)p * 2 * pairs + k, held, codes);
                const __m512i widened = _mm512_slli_epi32(_mm512_cvtepu16_epi32(codes), 16);
                left = _mm512_sub_ps(left, _mm512_castsi512_ps(widened));
                if (_mm256_test_epi16_mask(codes, codes) && needed < p + 1) needed = p + 1;
            }
        }
    }
    return needed;
}

/* A panel's 8 weights for inputs 2q and 2q + 1 as 8 pairs (output j's two in lane j); a
 * missing second input zero. */
static inline __attribute__((always_inline)) __m256i bfloat16_pairs(const uint16_t *panel,
                                                                    int q, int in) {
    const __m256i order = _mm256_setr_epi16(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    const __mmask16 present = 2 * q + 1 < in ? 0xFFFF : 0x00FF;
    return _mm256_permutexvar_epi16(order,
                                    _mm256_maskz_loadu_epi16(present, panel + (int64_t)16 * q));
}

/* ROWS rows' PARTS parts times 2 · DUOS bfloat16 panels from `panel` (DUOS 0: one panel, in a
 * 256-bit register), sums in 512-bit registers of two panels' outputs (ROWS × DUOS ≤ 24 of
 * the 32, beside the weights: eight rows take each weight from memory once, where two passes
 * of four took them from memory, then again from the cache). The loops are unrolled by
 * pragma: left to GCC, eight rows' sums went to memory at every step. */
static inline __attribute__((always_inline)) void bfloat16_tile(
    const uint16_t *parts, const uint16_t *panels, float *y, int panel, int out, int in,
    int pairs, const int ROWS, const int DUOS, const int PARTS) {
    const int wide = DUOS > 0, count = wide ? DUOS : 1;
    __m512 sums[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 3
        for (int d = 0; d < count; d++) sums[r][d] = _mm512_setzero_ps();
    for (int q = 0; q < pairs; q++) {
        __m512i weights[3];
#pragma GCC unroll 3
        for (int d = 0; d < count; d++) {
            const uint16_t *first = panels + (int64_t)(panel + 2 * d) * 8 * in;
            const __m256i low = bfloat16_pairs(first, q, in);
            weights[d] = wide ? _mm512_inserti64x4(_mm512_castsi256_si512(low),
                                                   bfloat16_pairs(first + 8 * in, q, in), 1)
                              : _mm512_castsi256_si512(low);
        }
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 3
            for (int p = 0; p < PARTS; p++) {
                int32_t pair;
                memcpy(&pair, parts + ((int64_t)r * 3 + p) * 2 * pairs + 2 * q, sizeof pair);
#pragma GCC unroll 3
                for (int d = 0; d < count; d++) {
                    if (wide)
                        sums[r][d] = _mm512_dpbf16_ps(sums[r][d], (__m512bh)weights[d],
                                                      (__m512bh)_mm512_set1_epi32(pair));
                    else
                        sums[r][d] = _mm512_castps256_ps512(_mm256_dpbf16_ps(
                            _mm512_castps512_ps256(sums[r][d]),
                            (__m256bh)_mm512_castsi512_si256(weights[d]),
                            (__m256bh)_mm256_set1_epi32(pair)));
                }
            }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++)
        store_row(y + (int64_t)r * out, sums[r], panel, out, wide ? 2 * DUOS : 1);
}

#define BFLOAT16_TILES(ROWS, DUOS, PARTS)                                                       \
    do {                                                                                        \
        const int whole = count / (2 * (DUOS));                                                 \
        _Pragma("omp parallel for schedule(dynamic, 2)")                                        \
        for (int t = 0; t < whole; t++) {                                                       \
            int r = 0;                                                                          \
            for (; r + (ROWS) <= rows; r += (ROWS))                                             \
                bfloat16_tile(parts + (int64_t)r * 6 * pairs, panels, y + (int64_t)r * out,     \
                              t * 2 * (DUOS), out, in, pairs, ROWS, DUOS, PARTS);               \
            for (; r + 4 <= rows; r += 4)                                                       \
                bfloat16_tile(parts + (int64_t)r * 6 * pairs, panels, y + (int64_t)r * out,     \
                              t * 2 * (DUOS), out, in, pairs, 4, DUOS, PARTS);                  \
            for (; r < rows; r++)                                                               \
                bfloat16_tile(parts + (int64_t)r * 6 * pairs, panels, y + (int64_t)r * out,     \
                              t * 2 * (DUOS), out, in, pairs, 1, DUOS, PARTS);                  \
        }                                                                                       \
        for (int p = whole * 2 * (DUOS); p < count; p++)                                        \
            for (int r = 0; r < rows; r++)                                                      \
                bfloat16_tile(parts + (int64_t)r * 6 * pairs, panels, y + (int64_t)r * out, p,  \
                              out, in, pairs, 1, 0, PARTS);                                     \
    } while (0)

#define BFLOAT16_ALL_ROWS(PARTS)          \
    do {                                  \
        if (rows < 4)                     \
            BFLOAT16_TILES(2, 3, PARTS);  \
        else if (rows < 8)                \
            BFLOAT16_TILES(4, 3, PARTS);  \
        else                              \
            BFLOAT16_TILES(8, 3, PARTS);  \
    } while (0)

static void bfloat16_mm(const float *x, const uint16_t *panels, float *y, int rows, int out,
                        int in) {
    const int count = (out + 7) / 8, pairs = (in + 1) / 2;
    uint16_t *parts = malloc((size_t)rows * 3 * 2 * pairs * sizeof *parts);
    if (!parts) {
        for (int64_t i = 0; i < (int64_t)rows * out; i++) y[i] = NAN;
        return;
    }
    if (bfloat16_parts(x, rows, in, pairs, parts) == 1)
        BFLOAT16_ALL_ROWS(1);
    else
        BFLOAT16_ALL_ROWS(3);
    free(parts);
}
#endif

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define WIDE_FLOAT32 1
/* tile() for float32 panels with 512-bit registers, each two panels' 8 outputs (ROWS × DUOS ≤
 * 24 sums of the 32 registers): the same multiply-adds per output, in the same order, as the
 * narrow tile, with fewer loads and broadcasts per product for the many rows of a batch (a
 * server's Mimi). Eight rows by two pairs of panels measured fastest at 4 to 128 rows. */
static inline __attribute__((always_inline)) void float32_tile_wide(
    Rows x, int64_t r0, const float *panels, const float *bias, float *y, int panel, int out,
    int in, const int ROWS, const int DUOS) {
    __m512 sums[8][3];
    const float *row[8];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) row[r] = row_at(x, r0 + r);
    for (int d = 0; d < DUOS; d++)
        sums[0][d] = _mm512_insertf32x8(
            _mm512_castps256_ps512(bias_at(bias, panel + 2 * d, out)),
            bias_at(bias, panel + 2 * d + 1, out), 1);
#pragma GCC unroll 8
    for (int r = 1; r < ROWS; r++)
        for (int d = 0; d < DUOS; d++) sums[r][d] = sums[0][d];
    const float *first = panels + (int64_t)panel * 8 * in;
    for (int k = 0; k < in; k++) {
        __m512 weights[3];
        for (int d = 0; d < DUOS; d++) {
            const float *low = first + (int64_t)2 * d * 8 * in + 8 * k;
            weights[d] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(low)),
                                            _mm256_loadu_ps(low + (int64_t)8 * in), 1);
        }
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; r++) {
            const __m512 value = _mm512_set1_ps(row[r][k]);
            for (int d = 0; d < DUOS; d++)
                sums[r][d] = _mm512_fmadd_ps(value, weights[d], sums[r][d]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) store_row(y + (int64_t)r * out, sums[r], panel, out, 2 * DUOS);
}

#define FLOAT32_WIDE_TILES(ROWS, DUOS)                                                          \
    do {                                                                                        \
        const int whole = count / (2 * (DUOS));                                                 \
        _Pragma("omp parallel for schedule(dynamic, 2)")                                        \
        for (int t = 0; t < whole * blocks; t++) {                                              \
            const int g = t % whole, from = t / whole * BLOCK;                                  \
            const int to = from + BLOCK < rows ? from + BLOCK : rows;                           \
            int r = from;                                                                       \
            for (; r + (ROWS) <= to; r += (ROWS))                                               \
                float32_tile_wide(x, r, panels, bias, y + (int64_t)r * out, g * 2 * (DUOS), out, \
                                  in, ROWS, DUOS);                                              \
            for (; r + 4 <= to; r += 4)                                                         \
                float32_tile_wide(x, r, panels, bias, y + (int64_t)r * out, g * 2 * (DUOS), out, \
                                  in, 4, DUOS);                                                 \
            for (; r < to; r++)                                                                 \
                float32_tile_wide(x, r, panels, bias, y + (int64_t)r * out, g * 2 * (DUOS), out, \
                                  in, 1, DUOS);                                                 \
        }                                                                                       \
        for (int p = whole * 2 * (DUOS); p < count; p++)                                        \
            for (int r = 0; r < rows; r++)                                                      \
                tile(x, r, panels, bias, y + (int64_t)r * out, p, out, in, 1, 1, FLOAT32);      \
    } while (0)
#endif

/* The largest |x[k]| for k in [start, end); NaNs ignored (as fmaxf does). */
static float largest_magnitude(const float *x, int start, int end) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 most = _mm256_setzero_ps();
    int k = start;
    for (; k + 8 <= end; k += 8)  /* max_ps keeps its second operand where the first is NaN */
        most = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), most);
    float lanes[8], largest = 0.0f;
    _mm256_storeu_ps(lanes, most);
    for (int l = 0; l < 8; l++) largest = fmaxf(largest, lanes[l]);
    for (; k < end; k++) largest = fmaxf(largest, fabsf(x[k]));
    return largest;
}

/* One row's 16-bit codes for each run of `group` inputs (pairs × 2 of them, the padding zero)
 * and each run's step: x / step rounded to nearest even (the vector conversion and lrintf
 * round alike), within ±32767 (a NaN's code is -32767). */
static void quantize_rows(const float *x, int rows, int in, int pairs, int group,
                          int16_t *codes, float *steps) {
    const int groups = (in + group - 1) / group;
    const __m256i top = _mm256_set1_epi32(32767), bottom = _mm256_set1_epi32(-32767);
    for (int r = 0; r < rows; r++) {
        const float *row = x + (int64_t)r * in;
        int16_t *coded = codes + (int64_t)r * 2 * pairs;
        for (int g = 0; g < groups; g++) {
            const int start = g * group, end = start + group < in ? start + group : in;
            const float largest = largest_magnitude(row, start, end);
            const float inverse = largest > 0.0f ? 32767.0f / largest : 0.0f;
            steps[(int64_t)r * groups + g] = largest / 32767.0f;
            const __m256 scale = _mm256_set1_ps(inverse);
            int k = start;
            for (; k + 8 <= end; k += 8) {
                __m256i code = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + k), scale));
                code = _mm256_max_epi32(_mm256_min_epi32(code, top), bottom);
                const __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(code),
                                                       _mm256_extracti128_si256(code, 1));
                _mm_storeu_si128((__m128i *)(coded + k), packed);
            }
            for (; k < end; k++) {
                const long code = lrintf(row[k] * inverse);
                coded[k] = (int16_t)(code > 32767 ? 32767 : code < -32767 ? -32767 : code);
            }
        }
        for (int k = in; k < 2 * pairs; k++) coded[k] = 0;
    }
}

/* acc + the sums of each lane's two products w·v, in int32: one instruction with VNNI
 * (AVX512-VNNI or AVX-VNNI), two without; the same sums either way (a pair's sum stays below
 * 2³¹ and VNNI's form without saturation wraps as the addition does). */
static inline __attribute__((always_inline)) __m256i pair_products_added(__m256i acc, __m256i w,
                                                                        __m256i v) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpwssd_epi32(acc, w, v);
#elif defined(__AVXVNNI__)
    return _mm256_dpwssd_avx_epi32(acc, w, v);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, v));
#endif
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define WIDE_INT8 1
/* int8_tile below with 512-bit registers: each holds two panels' 8 outputs for a pair of
 * inputs, so one multiply does 32 products (DUOS: pairs of panels; ROWS × DUOS ≤ 24 integer
 * sums in registers). Eight rows take each code from memory once, where two passes of four
 * took it from memory, then again from the cache; their integer sums fill the registers, so
 * the float sums, updated once a run, spill to memory. The loops are unrolled by pragma, as
 * in bfloat16_tile. */
static inline __attribute__((always_inline)) void int8_tile_wide(
    const int16_t *codes, const float *steps, const int8_t *panels, const uint16_t *scales,
    float *y, int panel, int out, int pairs, int groups, int group, const int ROWS,
    const int DUOS) {
    __m512 sums[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 3
        for (int d = 0; d < DUOS; d++) sums[r][d] = _mm512_setzero_ps();
    const int run = group / 2;
    const int64_t apart = (int64_t)pairs * 16;  /* from a panel's codes to the next one's */
    for (int g = 0; g < groups; g++) {
        __m512i acc[8][3];
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 3
            for (int d = 0; d < DUOS; d++) acc[r][d] = _mm512_setzero_si512();
        const int end = (g + 1) * run < pairs ? (g + 1) * run : pairs;
        for (int q = g * run; q < end; q++) {
            __m512i weights[3];
#pragma GCC unroll 3
            for (int d = 0; d < DUOS; d++) {
                const int8_t *first = panels + ((int64_t)(panel + 2 * d) * pairs + q) * 16;
                const __m256i both = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)first)),
                    _mm_loadu_si128((const __m128i *)(first + apart)), 1);
                weights[d] = _mm512_cvtepi8_epi16(both);
            }
#pragma GCC unroll 8
            for (int r = 0; r < ROWS; r++) {
                int32_t pair;
                memcpy(&pair, codes + (int64_t)r * 2 * pairs + 2 * q, sizeof pair);
                const __m512i value = _mm512_set1_epi32(pair);
#pragma GCC unroll 3
                for (int d = 0; d < DUOS; d++)
                    acc[r][d] = _mm512_dpwssd_epi32(acc[r][d], weights[d], value);
            }
        }
        __m512 scale[3];
#pragma GCC unroll 3
        for (int d = 0; d < DUOS; d++) {
            const int64_t low = ((int64_t)(panel + 2 * d) * groups + g) * 8;
            scale[d] = _mm512_castsi512_ps(_mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_castps_si256(weights_at(scales, low, BFLOAT16))),
                _mm256_castps_si256(weights_at(scales, low + (int64_t)groups * 8, BFLOAT16)), 1));
        }
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; r++) {
            const __m512 step = _mm512_set1_ps(steps[(int64_t)r * groups + g]);
#pragma GCC unroll 3
            for (int d = 0; d < DUOS; d++)
                sums[r][d] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][d]),
                                             _mm512_mul_ps(scale[d], step), sums[r][d]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; r++) store_row(y + (int64_t)r * out, sums[r], panel, out, 2 * DUOS);
}
#endif

/* ROWS rows' codes times PANELS int8 panels from `panel` (acc: ROWS × PANELS ≤ 12 registers,
 * beside PANELS of codes and one of activations). */
static inline __attribute__((always_inline)) void int8_tile(
    const int16_t *codes, const float *steps, const int8_t *panels, const uint16_t *scales,
    float *y, int panel, int out, int pairs, int groups, int group, const int ROWS,
    const int PANELS) {
#ifdef WIDE_INT8
    if (PANELS % 2 == 0) {
        int8_tile_wide(codes, steps, panels, scales, y, panel, out, pairs, groups, group, ROWS,
                       PANELS / 2);
        return;
    }
#endif
    __m256 sums[4][6];
    for (int r = 0; r < ROWS; r++)
        for (int p = 0; p < PANELS; p++) sums[r][p] = _mm256_setzero_ps();
    const int run = group / 2;  /* pairs per scale */
    for (int g = 0; g < groups; g++) {
        __m256i acc[4][6];
        for (int r = 0; r < ROWS; r++)
            for (int p = 0; p < PANELS; p++) acc[r][p] = _mm256_setzero_si256();
        const int end = (g + 1) * run < pairs ? (g + 1) * run : pairs;
        for (int q = g * run; q < end; q++) {
            __m256i weights[6];
            for (int p = 0; p < PANELS; p++)
                weights[p] = _mm256_cvtepi8_epi16(_mm_loadu_si128(
                    (const __m128i *)(panels + ((int64_t)(panel + p) * pairs + q) * 16)));
            for (int r = 0; r < ROWS; r++) {
                int32_t pair;
                memcpy(&pair, codes + (int64_t)r * 2 * pairs + 2 * q, sizeof pair);
                const __m256i value = _mm256_set1_epi32(pair);
                for (int p = 0; p < PANELS; p++)
                    acc[r][p] = pair_products_added(acc[r][p], weights[p], value);
            }
        }
        for (int r = 0; r < ROWS; r++) {
            const __m256 step = _mm256_set1_ps(steps[(int64_t)r * groups + g]);
            for (int p = 0; p < PANELS; p++) {
                const __m256 scale = _mm256_mul_ps(
                    weights_at(scales, ((int64_t)(panel + p) * groups + g) * 8, BFLOAT16), step);
                sums[r][p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][p]), scale, sums[r][p]);
            }
        }
    }
    store(y, sums, panel, out, ROWS, PANELS);
}

/* Panels per int8 tile for up to 3 rows, and for 4 (or, with 512-bit registers, 8) rows at a
 * time: with 512-bit registers (32 of them) three pairs; with AVX2's 16, as many as the sums
 * leave room for. */
#ifdef WIDE_INT8
#define INT8_PANELS 6
#define INT8_PANELS_BY_4 6
#else
#define INT8_PANELS 5
#define INT8_PANELS_BY_4 3
#endif

#define INT8_TILES(ROWS, PANELS)                                                                \
    do {                                                                                        \
        const int whole = count / (PANELS);                                                     \
        _Pragma("omp parallel for schedule(dynamic, 2)")                                        \
        for (int t = 0; t < whole; t++) {                                                       \
            int r = 0;                                                                          \
            for (; r + (ROWS) <= rows; r += (ROWS))                                             \
                int8_tile(codes + (int64_t)r * 2 * pairs, steps + (int64_t)r * groups, panels,  \
                          scales, y + (int64_t)r * out, t * (PANELS), out, pairs, groups,       \
                          group, ROWS, PANELS);                                                 \
            for (; r + 4 <= rows; r += 4)                                                       \
                int8_tile(codes + (int64_t)r * 2 * pairs, steps + (int64_t)r * groups, panels,  \
                          scales, y + (int64_t)r * out, t * (PANELS), out, pairs, groups,       \
                          group, 4, PANELS);                                                    \
            for (; r < rows; r++)                                                               \
                int8_tile(codes + (int64_t)r * 2 * pairs, steps + (int64_t)r * groups, panels,  \
                          scales, y + (int64_t)r * out, t * (PANELS), out, pairs, groups,       \
                          group, 1, PANELS);                                                    \
        }                                                                                       \
        for (int p = whole * (PANELS); p < count; p++)                                          \
            for (int r = 0; r < rows; r++)                                                      \
                int8_tile(codes + (int64_t)r * 2 * pairs, steps + (int64_t)r * groups, panels,  \
                          scales, y + (int64_t)r * out, p, out, pairs, groups, group, 1, 1);    \
    } while (0)

static void int8_mm(const float *x, const int8_t *panels, const uint16_t *scales, float *y,
                    int rows, int out, int in, int group) {
    const int count = (out + 7) / 8, pairs = (in + 1) / 2, groups = (in + group - 1) / group;
    int16_t *codes = malloc((size_t)rows * 2 * pairs * sizeof *codes);
    float *steps = malloc((size_t)rows * groups * sizeof *steps);
    if (codes && steps) {
        quantize_rows(x, rows, in, pairs, group, codes, steps);
        if (rows < 4)
            INT8_TILES(2, INT8_PANELS);
#ifdef WIDE_INT8
        else if (rows >= 8)
            INT8_TILES(8, INT8_PANELS_BY_4);
#endif
        else
            INT8_TILES(4, INT8_PANELS_BY_4);
    } else {
        for (int64_t i = 0; i < (int64_t)rows * out; i++) y[i] = NAN;
    }
    free(codes);
    free(steps);
}

/* Every row against groups of PANELS panels, ROWS rows at a time (single rows for the rest);
 * panels past the last whole group one by one. Threads take a group of panels for a block of
 * rows: a few rows (a step) share out the panels, a convolution's thousands of windows times
 * a few panels the rows. */
#define TILES(ROWS, PANELS, KIND)                                                             \
    do {                                                                                      \
        const int whole = count / (PANELS);                                                   \
        _Pragma("omp parallel for schedule(dynamic, 2)")                                      \
        for (int t = 0; t < whole * blocks; t++) {                                            \
            const int g = t % whole, from = t / whole * BLOCK;                                \
            const int to = from + BLOCK < rows ? from + BLOCK : rows;                         \
            int r = from;                                                                     \
            for (; r + (ROWS) <= to; r += (ROWS))                                             \
                tile(x, r, panels, bias, y + (int64_t)r * out, g * (PANELS), out, in, ROWS,   \
                     PANELS, KIND);                                                           \
            for (; r < to; r++)                                                               \
                tile(x, r, panels, bias, y + (int64_t)r * out, g * (PANELS), out, in, 1,      \
                     PANELS, KIND);                                                           \
        }                                                                                     \
        for (int p = whole * (PANELS); p < count; p++)                                        \
            for (int r = 0; r < rows; r++)                                                    \
                tile(x, r, panels, bias, y + (int64_t)r * out, p, out, in, 1, 1, KIND);       \
    } while (0)

/* Few rows: wide tiles keep enough sums in flight; more: four rows share each weight. */
#define ALL_ROWS(KIND)                   \
    do {                                 \
        if (rows < 4)                    \
            TILES(2, 6, KIND);           \
        else                             \
            TILES(4, 3, KIND);           \
    } while (0)

enum { BLOCK = 64 }; /* rows a thread takes at a time */

/* y [rows, out] = the rows of x (as Rows places them) times float32 or bfloat16 panels,
 * plus bias (NULL: none). */
static void float_product(Rows x, int rows, const void *panels, const float *bias, float *y,
                          int out, int in, int kind) {
    const int count = (out + 7) / 8, blocks = (rows + BLOCK - 1) / BLOCK;
    if (kind == BFLOAT16)
        ALL_ROWS(BFLOAT16);
#ifdef WIDE_FLOAT32
    else if (rows >= 4)
        FLOAT32_WIDE_TILES(8, 2);
#endif
    else
        ALL_ROWS(FLOAT32);
}

/* x [rows, in] float32, panels [⌈out / 8⌉, in, 8] of float weights or [⌈out / 8⌉, ⌈in / 2⌉,
 * 16] of int8 codes, scales (int8 only) [⌈out / 8⌉, ⌈in / group⌉, 8] bfloat16 → y [rows,
 * out] float32. */
void panels_mm(const float *x, const void *panels, const uint16_t *scales, float *y, int rows,
               int out, int in, int group, int kind) {
    if (kind == INT8)
        int8_mm(x, panels, scales, y, rows, out, in, group);
#ifdef NATIVE_BFLOAT16
    else if (kind == BFLOAT16)
        bfloat16_mm(x, panels, y, rows, out, in);
#endif
    else
        float_product((Rows){x, rows > 0 ? rows : 1, 0, in}, rows, panels, NULL, y, out, in,
                      kind);
}

/* A convolution over channels-last x [streams, span, channels], each stream's input already
 * led by what precedes it: y [streams · windows, out] = each window of `width` floats (window
 * t of a stream starts at sample t · stride) times the float32 panels [⌈out / 8⌉, width, 8],
 * plus bias (NULL: none). The windows are read where they lie: copied out, a convolution of
 * kernel k wrote and read its input k / stride times over. */
void panels_windows(const float *x, const float *panels, const float *bias, float *y,
                    int streams, int span, int channels, int stride, int windows, int out,
                    int width) {
    const Rows at = {x, windows > 0 ? windows : 1, (int64_t)span * channels,
                     (int64_t)stride * channels};
    float_product(at, streams * windows, panels, bias, y, out, width, FLOAT32);
}

/* One row's 16-bit codes and steps for int8 panels (`codes`: ⌈in / 2⌉ × 2, `steps`: ⌈in /
 * group⌉), as panels_mm rounds its rows. */
void panels_row_codes(const float *x, int in, int group, int16_t *codes, float *steps) {
    quantize_rows(x, 1, in, (in + 1) / 2, group, codes, steps);
}

/* One row times panels [first, last) of a matrix, on the calling thread (a caller that splits
 * the panels among its own threads): the row as float32 `x` for float panels, as its codes and
 * steps (panels_row_codes) for int8. y [out] gets those panels' outputs, summed as panels_mm
 * sums them. */
void panels_row_range(const float *x, const int16_t *codes, const float *steps,
                      const void *panels, const uint16_t *scales, float *y, int out, int in,
                      int group, int kind, int first, int last) {
    const int pairs = (in + 1) / 2, groups = kind == INT8 ? (in + group - 1) / group : 0;
    const Rows one = {x, 1, 0, in};
    int p = first;
    if (kind == INT8) {
        for (; p + INT8_PANELS <= last; p += INT8_PANELS)
            int8_tile(codes, steps, panels, scales, y, p, out, pairs, groups, group, 1,
                      INT8_PANELS);
        for (; p < last; p++)
            int8_tile(codes, steps, panels, scales, y, p, out, pairs, groups, group, 1, 1);
    } else if (kind == BFLOAT16) {
#ifdef NATIVE_BFLOAT16
        uint16_t parts[3 * 2 * pairs];
        const uint16_t *bits = panels;
        if (bfloat16_parts(x, 1, in, pairs, parts) == 1) {
            for (; p + 6 <= last; p += 6) bfloat16_tile(parts, bits, y, p, out, in, pairs, 1, 3, 1);
            for (; p < last; p++) bfloat16_tile(parts, bits, y, p, out, in, pairs, 1, 0, 1);
        } else {
            for (; p + 6 <= last; p += 6) bfloat16_tile(parts, bits, y, p, out, in, pairs, 1, 3, 3);
            for (; p < last; p++) bfloat16_tile(parts, bits, y, p, out, in, pairs, 1, 0, 3);
        }
#else
        for (; p + 6 <= last; p += 6) tile(one, 0, panels, NULL, y, p, out, in, 1, 6, BFLOAT16);
        for (; p < last; p++) tile(one, 0, panels, NULL, y, p, out, in, 1, 1, BFLOAT16);
#endif
    } else {
        for (; p + 6 <= last; p += 6) tile(one, 0, panels, NULL, y, p, out, in, 1, 6, FLOAT32);
        for (; p < last; p++) tile(one, 0, panels, NULL, y, p, out, in, 1, 1, FLOAT32);
    }
}

/* The Euclidean norms of a row and of what its 16-bit codes (as int8_mm rounds it) miss. */
static void row_norms(const float *row, int dim, int group, double *size, double *missed) {
    const int pairs = (dim + 1) / 2, groups = (dim + group - 1) / group;
    int16_t codes[2 * pairs];
    float steps[groups];
    quantize_rows(row, 1, dim, pairs, group, codes, steps);
    double total = 0.0, off = 0.0;
    for (int k = 0; k < dim; k++) {
        const double restored = (double)codes[k] * steps[k / group], value = row[k];
        total += value * value;
        off += (value - restored) * (value - restored);
    }
    *size = sqrt(total), *missed = sqrt(off);
}

/* Entries of `size` whose screened distance may be the least, in order, into `chosen` → how
 * many. lower[j] = approx − bound and the least approx + bound (the ceiling) are found in one
 * pass of four lanes (a NaN row's distances compare to nothing: no candidate). */
static int candidates_of(const float *dots, const float *entries, double magnitude,
                         double missed, int size, double *lower, int *chosen) {
    const float *squares = entries, *error = squares + size, *coded = error + size;
    const float *norm = coded + size;
    /* what the scalar loop after it computes, to the bit (doubling and dividing by 4096 are
     * exact in either order) */
    const __m256d two = _mm256_set1_pd(2.0), share = _mm256_set1_pd(1.0 / 4096.0);
    const __m256d length = _mm256_set1_pd(magnitude), miss = _mm256_set1_pd(missed);
    __m256d least = _mm256_set1_pd(INFINITY);
    int j = 0;
    for (; j + 4 <= size; j += 4) {
        const __m256d square = _mm256_cvtps_pd(_mm_loadu_ps(squares + j));
        const __m256d near = _mm256_cvtps_pd(_mm_loadu_ps(coded + j));
        const __m256d dot = _mm256_cvtps_pd(_mm_loadu_ps(dots + j));
        const __m256d approx = _mm256_sub_pd(square, _mm256_mul_pd(two, dot));
        const __m256d apart = _mm256_add_pd(_mm256_cvtps_pd(_mm_loadu_ps(norm + j)), near);
        const __m256d rounding =
            _mm256_add_pd(square, _mm256_mul_pd(two, _mm256_mul_pd(length, apart)));
        const __m256d off = _mm256_add_pd(
            _mm256_mul_pd(length, _mm256_cvtps_pd(_mm_loadu_ps(error + j))),
            _mm256_mul_pd(miss, near));
        const __m256d bound =
            _mm256_add_pd(_mm256_mul_pd(two, off), _mm256_mul_pd(rounding, share));
        _mm256_storeu_pd(lower + j, _mm256_sub_pd(approx, bound));
        least = _mm256_min_pd(_mm256_add_pd(approx, bound), least); /* a NaN: least kept */
    }
    double lanes[4], ceiling = INFINITY;
    _mm256_storeu_pd(lanes, least);
    for (int l = 0; l < 4; l++) ceiling = fmin(ceiling, lanes[l]);
    for (; j < size; j++) {
        const double approx = squares[j] - 2.0 * dots[j];
        const double rounding = squares[j] + 2.0 * magnitude * (norm[j] + coded[j]);
        const double bound = 2.0 * (magnitude * error[j] + missed * coded[j]) + rounding / 4096.0;
        lower[j] = approx - bound;
        ceiling = fmin(ceiling, approx + bound);
    }
    int count = 0;
    for (j = 0; j < size; j++) {
        chosen[count] = j;
        count += lower[j] <= ceiling;
    }
    return count;
}

/* The first of the `count` entries `chosen` whose |e|² − 2 r·e is least, r·e summed as
 * panels_mm sums it (one fused multiply-add per input, in input order). Past a sixteenth of
 * the entries (a codebook of near-equal entries) all of them are multiplied at once, into
 * `dots`. */
static int nearest_of(const float *row, const float *panels, const float *squares,
                      const int *chosen, int count, int size, int dim, float *dots) {
    const int all = count > size / 16;
    if (all) panels_mm(row, panels, NULL, dots, 1, size, dim, 0, FLOAT32);
    int best = -1;
    float least = INFINITY;
    for (int i = 0; i < count; i++) {
        const int j = chosen[i];
        float dot = 0.0f;
        if (all) {
            dot = dots[j];
        } else {
            const float *entry = panels + (int64_t)(j / 8) * 8 * dim + j % 8;
            for (int k = 0; k < dim; k++) dot = fmaf(row[k], entry[8 * k], dot);
        }
        const float distance = squares[j] - 2.0f * dot;
        if (best < 0 || distance < least) least = distance, best = j;
    }
    return best < 0 ? 0 : best; /* no candidate (a NaN row): the first, as a plain search */
}

/* Residual vector quantization of rows [rows, dim] (float32, updated in place: what is left
 * after every codebook) by `count` codebooks: codes [rows, count], the entry nearest to what
 * is left, codebook after codebook, in one call (32 searches of a streamed frame were 160
 * small PyTorch operations). Nearest is the least |e|² − 2 r·e (|r|² is the same for every
 * entry; the doubling is exact), the first such entry on ties, r·e summed as panels_mm sums
 * it from the float32 panels [⌈size / 8⌉, dim, 8].
 *
 * Reading every float32 entry would cost four times the bytes of what decides: each codebook
 * is screened by its int8 panels (`screens`, `screen_scales`, as panels_mm takes them), whose
 * r·ê misses r·e by at most |r| |e − ê| + |r − r̂| |ê| (r̂: the row's 16-bit codes), plus
 * float32 rounding (below 2⁻¹² of |e|² + 2 |r| (|e| + |ê|)). Only entries whose screened
 * distance, less its bound, reaches the least screened distance plus its bound can be
 * nearest; those alone are scored from the float32 panels, so the codes are those of the
 * float32 search. entries[c] [4, size]: each entry's |e|², |e − ê|, |ê| and |e|.
 *
 * A codebook's screen multiplies every row at once; then the threads take rows, each row's
 * search being serial work as long as that product (a batch of streams' frames). */
void panels_nearest(float *x, const void *const *books, const void *const *screens,
                    const uint16_t *const *screen_scales, const float *const *entries,
                    int book_count, int rows, int size, int dim, int group, int64_t *codes) {
    float *dots = malloc((size_t)rows * size * sizeof *dots);
    int failed = dots == NULL;
    for (int c = 0; c < book_count && !failed; c++) {
        int8_mm(x, screens[c], screen_scales[c], dots, rows, size, dim, group);
#pragma omp parallel if (rows > 1) reduction(|| : failed)
        {
            double *lower = malloc((size_t)size * sizeof *lower);
            int *chosen = malloc((size_t)size * sizeof *chosen);
            float *exact = malloc((size_t)size * sizeof *exact);
            failed = !lower || !chosen || !exact;
#pragma omp for schedule(dynamic, 1)
            for (int r = 0; r < rows; r++) {
                if (failed) continue;
                float *row = x + (int64_t)r * dim;
                double magnitude, missed;
                row_norms(row, dim, group, &magnitude, &missed);
                const int count = candidates_of(dots + (int64_t)r * size, entries[c], magnitude,
                                                missed, size, lower, chosen);
                const float *book = books[c];
                const int best = nearest_of(row, book, entries[c], chosen, count, size, dim,
                                            exact);
                codes[(int64_t)r * book_count + c] = best;
                const float *entry = book + (int64_t)(best / 8) * 8 * dim + best % 8;
                for (int k = 0; k < dim; k++) row[k] -= entry[8 * k];
            }
            free(lower), free(chosen), free(exact);
        }
    }
    if (failed)
        for (int64_t i = 0; i < (int64_t)rows * book_count; i++) codes[i] = -1;
    free(dots);
}
