/* Attention of query rows over rings of bfloat16, int8 or float32 keys and values, in float32,
 * on AVX2 and FMA; and a step's writes to a ring, its queries and keys rotated on the way.
 *
 * A streaming step's few queries read every key and value of their ring once, so attention
 * should take as long as reading the ring; PyTorch's kernels read a bfloat16 ring at a
 * fraction of memory speed where bfloat16 is emulated, and spend more on their own set-up than
 * on a short float32 ring (Mimi's). Here each key and value is widened to float32 as it is
 * read (a shift for bfloat16, a conversion for int8: both exact); scores, softmax and sums are
 * float32. An int8 ring holds every key and value vector (one head's, at one position) as
 * codes times one float32 scale, its largest magnitude over 127: half the bytes of bfloat16,
 * the scale applied once per score and per value weight.
 *
 * Slot s of ring row r holds position positions[r][s] (-1: none). Query step t of query row i
 * sits at position starts[i] + t on ring row rows[i], and sees the slots among the first
 * `seen` whose position p has 0 <= p <= it and p > it - window. Query heads share key heads
 * in groups (heads / kv_heads). Threads split the (row, head, step) triples.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vector_exp.h"

#define MAX_DIM 128 /* head dimensions up to this, in multiples of 8 */
#define KEYS 4     /* keys scored together */

enum format { BFLOAT16, INT8, FLOAT32 }; /* a ring's keys and values */

/* Eight values of a ring from element `at`, in float32. Inlined with `format` a constant, so
 * each format has its own loop. */
static inline __attribute__((always_inline)) __m256 widened(const void *ring, int64_t at,
                                                            const enum format format) {
    if (format == FLOAT32) return _mm256_loadu_ps((const float *)ring + at);
    if (format == INT8) {
        const __m128i codes = _mm_loadl_epi64((const __m128i *)((const int8_t *)ring + at));
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
    }
    const __m128i halves = _mm_loadu_si128((const __m128i *)((const uint16_t *)ring + at));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

static inline float sum_of(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* e^x for x <= 0 (vector_exp.h), 0 where x is -inf. Eight at a time: a full ring's scalar
 * expf was a sixth of the time. */
static inline __m256 exp_of(__m256 x) {
    const __m256 hidden = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
    return _mm256_andnot_ps(hidden, exp_below_zero(x));
}

/* One (row, head, step) triple `job` of the kernels below: its query over its ring row.
 * key_scales, value_scales [ring rows, kv_heads, size] for INT8, else unused. */
static inline __attribute__((always_inline)) void attend_job(
    int job, const float *queries, const void *keys, const void *values,
    const float *key_scales, const float *value_scales, const int64_t *positions,
    const int64_t *rows, const int64_t *starts, float *out, int heads, int kv_heads, int steps,
    int size, int seen, int dim, int window, float scale, const enum format format) {
    const int group = heads / kv_heads, lanes = dim / 8;
    const int step = job % steps, head = job / steps % heads, i = job / steps / heads;
    const int64_t ring = rows[i], at = starts[i] + step;
    const int64_t vectors = (ring * kv_heads + head / group) * size, block = vectors * dim;
    const int64_t *held = positions + ring * size;
    const float *query = queries + (int64_t)job * dim;
    float scores[seen + KEYS], top = -INFINITY, total = 0.0f;
    /* KEYS keys at a time: one chain of FMAs per key would wait on its own latency */
    for (int s = 0; s < seen; s += KEYS) {
        __m256 dots[KEYS];
        for (int j = 0; j < KEYS; j++) dots[j] = _mm256_setzero_ps();
        const int count = seen - s < KEYS ? seen - s : KEYS;
        for (int d = 0; d < dim; d += 8) {
            const __m256 q = _mm256_loadu_ps(query + d);
            for (int j = 0; j < KEYS; j++)
                if (j < count)
                    dots[j] = _mm256_fmadd_ps(
                        q, widened(keys, block + (int64_t)(s + j) * dim + d, format), dots[j]);
        }
        for (int j = 0; j < count; j++) {
            const int64_t p = held[s + j];
            const int visible = p >= 0 && p <= at && p > at - window;
            const float factor = format == INT8 ? scale * key_scales[vectors + s + j] : scale;
            scores[s + j] = visible ? sum_of(dots[j]) * factor : -INFINITY;
            top = scores[s + j] > top ? scores[s + j] : top;
        }
    }
    int s = 0;
    __m256 totals = _mm256_setzero_ps();
    for (; s + 8 <= seen; s += 8) {
        const __m256 e = exp_of(_mm256_sub_ps(_mm256_loadu_ps(scores + s), _mm256_set1_ps(top)));
        _mm256_storeu_ps(scores + s, e);
        totals = _mm256_add_ps(totals, e);
    }
    total = sum_of(totals);
    for (; s < seen; s++) {
        scores[s] = scores[s] == -INFINITY ? 0.0f : expf(scores[s] - top);
        total += scores[s];
    }
    const float inverse = 1.0f / total;
    __m256 sums[MAX_DIM / 8];
    for (int l = 0; l < lanes; l++) sums[l] = _mm256_setzero_ps();
    for (int s = 0; s < seen; s++) {
        if (scores[s] == 0.0f) continue;
        const float w = scores[s] * inverse * (format == INT8 ? value_scales[vectors + s] : 1.0f);
        const __m256 weight = _mm256_set1_ps(w);
        for (int l = 0; l < lanes; l++)
            sums[l] = _mm256_fmadd_ps(
                weight, widened(values, block + (int64_t)s * dim + 8 * l, format), sums[l]);
    }
    for (int l = 0; l < lanes; l++) _mm256_storeu_ps(out + (int64_t)job * dim + 8 * l, sums[l]);
}

#define EVERY_JOB(format)                                                                  \
    _Pragma("omp parallel for schedule(static)") for (int job = 0; job < n * heads * steps;   \
                                                      job++)                                 \
        attend_job(job, queries, keys, values, key_scales, value_scales, positions, rows,    \
                   starts, out, heads, kv_heads, steps, size, seen, dim, window, scale, format)

/* queries, out [n, heads, steps, dim] float32; keys, values [ring rows, kv_heads, size, dim] in
 * `format` (an enum format), with key_scales, value_scales [ring rows, kv_heads, size] for
 * INT8 (else unused); positions [ring rows, size]; rows, starts [n]. */
void ring_attend(const float *queries, const void *keys, const void *values,
                 const float *key_scales, const float *value_scales, const int64_t *positions,
                 const int64_t *rows, const int64_t *starts, float *out, int n, int heads,
                 int kv_heads, int steps, int size, int seen, int dim, int window, float scale,
                 int format) {
    if (format == INT8)
        EVERY_JOB(INT8);
    else if (format == FLOAT32)
        EVERY_JOB(FLOAT32);
    else
        EVERY_JOB(BFLOAT16);
}

/* One vector of `dim` floats as int8 codes: round-half-even of x / scale, where scale is its
 * largest magnitude over 127 (0, with zero codes, for a zero vector). */
static float quantized_vector(const float *x, int8_t *codes, int dim) {
    float largest = 0.0f;
    for (int d = 0; d < dim; d++) largest = fabsf(x[d]) > largest ? fabsf(x[d]) : largest;
    const float scale = largest / 127.0f;
    for (int d = 0; d < dim; d++) codes[d] = scale > 0.0f ? (int8_t)nearbyintf(x[d] / scale) : 0;
    return scale;
}

/* x [dim] rotated by its position's angles (rotate-half: element d pairs with d + dim / 2), as
 * x * cos + rotate_half(x) * sin; a copy where cos is NULL. */
static void rotated(const float *x, const float *cos, const float *sin, float *out, int dim) {
    if (!cos) {
        memcpy(out, x, dim * sizeof(float));
        return;
    }
    const int half = dim / 2;
    for (int d = 0; d < dim; d++) {
        const float partner = d < half ? -x[d + half] : x[d - half];
        out[d] = x[d] * cos[d] + partner * sin[d];
    }
}

/* One key or value vector into its slot of a ring in `format`: int8 codes and their scale,
 * bfloat16 rounded to nearest even, or float32 as it is. */
static void stored(const float *x, void *ring, float *scales, int64_t vector, int dim,
                   enum format format) {
    if (format == INT8) {
        scales[vector] = quantized_vector(x, (int8_t *)ring + vector * dim, dim);
    } else if (format == FLOAT32) {
        memcpy((float *)ring + vector * dim, x, dim * sizeof(float));
    } else {
        uint16_t *halves = (uint16_t *)ring + vector * dim;
        for (int d = 0; d < dim; d++) {
            uint32_t bits;
            memcpy(&bits, x + d, sizeof bits);
            halves[d] = (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
        }
    }
}

/* One attention step's writes. Step t of row i is position starts[i] + t of ring row rows[i]:
 * its keys and values go to slot (starts[i] + t) % size of the ring (in `format`; int8 with
 * key_scales, value_scales [ring rows, kv_heads, size]) and positions records it; where
 * `heads` > 0 its queries go to queries_out [n, heads, steps, dim]. Queries and keys are
 * rotated to their positions where cos and sin are given (angles of row i, step t at
 * cos + i * angle_stride + t * dim). Sources are float32 with the last dimension contiguous:
 * element (i, h, t) of queries, keys and values at strides[0..2], [3..5] and [6..8]. */
void ring_step(const float *queries, const float *keys, const float *values,
               const int64_t *strides, const float *cos, const float *sin, int64_t angle_stride,
               float *queries_out, void *ring_keys, void *ring_values, float *key_scales,
               float *value_scales, int64_t *positions, const int64_t *rows,
               const int64_t *starts, int n, int heads, int kv_heads, int steps, int size,
               int dim, int format) {
    /* The slots written lie far apart (one per row and key head, a page or more from the
     * next): each is asked for before any is written, so their misses overlap rather than
     * one waiting on the other. */
    const int64_t bytes = (int64_t)dim * (format == INT8 ? 1 : format == FLOAT32 ? 4 : 2);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < steps; t++)
            for (int h = 0; h < kv_heads; h++) {
                const int64_t vector = (rows[i] * kv_heads + h) * size + (starts[i] + t) % size;
                for (int64_t b = 0; b < bytes; b += 64) {
                    __builtin_prefetch((const char *)ring_keys + vector * bytes + b, 1);
                    __builtin_prefetch((const char *)ring_values + vector * bytes + b, 1);
                }
                if (format == INT8) {
                    __builtin_prefetch(key_scales + vector, 1);
                    __builtin_prefetch(value_scales + vector, 1);
                }
            }
    float buffer[MAX_DIM];
    for (int i = 0; i < n; i++)
        for (int t = 0; t < steps; t++) {
            const int64_t position = starts[i] + t, slot = position % size;
            const float *c = cos ? cos + i * angle_stride + (int64_t)t * dim : NULL;
            const float *s = sin ? sin + i * angle_stride + (int64_t)t * dim : NULL;
            positions[rows[i] * size + slot] = position;
            for (int h = 0; h < heads; h++) {
                const float *q = queries + i * strides[0] + h * strides[1] + t * strides[2];
                rotated(q, c, s, queries_out + (((int64_t)i * heads + h) * steps + t) * dim, dim);
            }
            for (int h = 0; h < kv_heads; h++) {
                const int64_t vector = (rows[i] * kv_heads + h) * size + slot;
                rotated(keys + i * strides[3] + h * strides[4] + t * strides[5], c, s, buffer, dim);
                stored(buffer, ring_keys, key_scales, vector, dim, format);
                const float *v = values + i * strides[6] + h * strides[7] + t * strides[8];
                stored(v, ring_values, value_scales, vector, dim, format);
            }
        }
}
