/* One greedy step of a BART-family text decoder (Marian, M2M100, NLLB): one token of one row
 * through every layer, and the output layer, in one call, on AVX2 and FMA.
 *
 * A translation step multiplies one row by a few dozen small matrices with a dozen small
 * operations between each two; run one by one, each product wakes the cores' thread team
 * (where idle threads sleep, as Livecap sets them: a wake-up costs more than a small product)
 * and each operation costs its dispatch. Here the threads enter one parallel region per step,
 * take each matrix's panels a few at a time as they come free (panels.c's product, on the
 * calling thread) and meet at a spinning barrier between the parts that need the whole vector: OpenMP's own
 * barrier would put them to sleep at every meeting. A thread that cannot get its core (other
 * work on the machine) yields it after a short spin instead of burning it.
 *
 * Layer (BART's names): self-attention, cross-attention to the encoder, feed-forward block,
 * each either post-norm (x = LN(x + block(x)), Marian) or pre-norm (x = x + block(LN(x)),
 * M2M100, with a final LayerNorm before the output layer). Matrices are panels (panels.py):
 * int8 codes with their scales or float32, each with a float32 bias. The self-attention cache
 * holds float32 keys and values [heads, capacity, head_dim] (strides given): this step's are
 * written at `position`, and attention reads positions 0 to `position`; cross-attention reads
 * the encoder's `cross_length` keys and values. Attention scales scores by head_dim^-½.
 * Where scratch memory cannot be had, x and the logits are NaN: never a silently wrong step.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { INT8, BFLOAT16, FLOAT32 }; /* panels.c's kinds */
enum { RELU, GELU, GELU_TANH, SILU };
enum { PANELS_TAKEN = 10, PRODUCTS_PER_LAYER = 6 }; /* two of panels.c's 5-panel tiles */

void panels_row_codes(const float *x, int in, int group, int16_t *codes, float *steps);
void panels_row_range(const float *x, const int16_t *codes, const float *steps,
                      const void *panels, const uint16_t *scales, float *y, int out, int in,
                      int group, int kind, int first, int last);

typedef struct {
    const void *values;
    const uint16_t *scales; /* int8 only: bfloat16 */
    const float *bias;      /* or NULL */
    int out, in, kind;
} Matrix;

typedef struct {
    const float *weight, *bias;
    float eps;
} Norm;

typedef struct {
    Norm self_norm, cross_norm, ffn_norm;
    Matrix qkv, self_out, cross_q, cross_out, fc1, fc2;
} Layer;

typedef struct {
    float *keys, *values; /* this layer's self-attention cache */
    int64_t head_stride, position_stride;
    const float *cross_keys, *cross_values;
    int64_t cross_head_stride, cross_position_stride;
} LayerState;

typedef struct {
    int arrived, sense;
} Barrier;

/* All `threads` meet here; writes before it are seen by every thread after it. */
static void meet(Barrier *barrier, int *sense, int threads) {
    if (threads == 1) return;
    const int mine = !*sense;
    *sense = mine;
    if (__atomic_add_fetch(&barrier->arrived, 1, __ATOMIC_ACQ_REL) == threads) {
        __atomic_store_n(&barrier->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&barrier->sense, mine, __ATOMIC_RELEASE);
        return;
    }
    for (int spins = 0; __atomic_load_n(&barrier->sense, __ATOMIC_ACQUIRE) != mine; spins++) {
        if (spins < 1000)
            _mm_pause();
        else
            sched_yield();
    }
}

static float activated(float v, int activation) {
    switch (activation) {
    case RELU: return v > 0.0f ? v : 0.0f;
    case GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678f));
    case GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.79788456f * (v + 0.044715f * v * v * v)));
    default: return v / (1.0f + expf(-v));
    }
}

/* y = x · Wᵀ + bias (activated if `activation` ≥ 0), the threads taking PANELS_TAKEN panels at
 * a time from the shared count `taken` (zero before) as they come free: a thread whose core
 * other work shares takes fewer. `codes`, `steps`: the thread's scratch for x's 16-bit codes. */
static void product(const Matrix *m, const float *x, float *y, int *taken, int group,
                    int16_t *codes, float *steps, int activation) {
    const int panels = (m->out + 7) / 8;
    if (m->kind == INT8) panels_row_codes(x, m->in, group, codes, steps);
    for (;;) {
        const int first = __atomic_fetch_add(taken, PANELS_TAKEN, __ATOMIC_RELAXED);
        if (first >= panels) return;
        const int last = first + PANELS_TAKEN < panels ? first + PANELS_TAKEN : panels;
        panels_row_range(x, codes, steps, m->values, m->scales, y, m->out, m->in, group,
                         m->kind, first, last);
        const int end = 8 * last < m->out ? 8 * last : m->out;
        for (int j = 8 * first; j < end; j++) {
            float v = m->bias ? y[j] + m->bias[j] : y[j];
            y[j] = activation >= 0 ? activated(v, activation) : v;
        }
    }
}

static void layer_norm(const float *x, const Norm *norm, float *y, int width) {
    float mean = 0.0f, variance = 0.0f;
    for (int k = 0; k < width; k++) mean += x[k];
    mean /= width;
    for (int k = 0; k < width; k++) variance += (x[k] - mean) * (x[k] - mean);
    const float scale = 1.0f / sqrtf(variance / width + norm->eps);
    for (int k = 0; k < width; k++) y[k] = (x[k] - mean) * scale * norm->weight[k] + norm->bias[k];
}

static float dot(const float *a, const float *b, int n) {
    __m256 sums = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= n; k += 8)
        sums = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), sums);
    float lanes[8], total = 0.0f;
    _mm256_storeu_ps(lanes, sums);
    for (int l = 0; l < 8; l++) total += lanes[l];
    for (; k < n; k++) total += a[k] * b[k];
    return total;
}

/* One head's attention of query q over `length` keys and values → out [head_dim]. */
static void attend(const float *q, const float *keys, const float *values, int64_t stride,
                   int length, int head_dim, float *scores, float *out) {
    const float scale = 1.0f / sqrtf((float)head_dim);
    float largest = -INFINITY, total = 0.0f;
    for (int s = 0; s < length; s++) {
        scores[s] = dot(q, keys + s * stride, head_dim) * scale;
        largest = fmaxf(largest, scores[s]);
    }
    for (int s = 0; s < length; s++) total += scores[s] = expf(scores[s] - largest);
    memset(out, 0, head_dim * sizeof *out);
    for (int s = 0; s < length; s++) {
        const float p = scores[s] / total, *v = values + s * stride;
        for (int d = 0; d < head_dim; d++) out[d] += p * v[d];
    }
}

typedef struct {
    int width, heads, ffn, pre_norm, activation, group, position, cross_length;
} Shape;

typedef struct { /* shared by the threads */
    float *x, *normed, *qkv, *mixed, *block, *hidden;
    int *taken; /* each product's panels taken so far: PRODUCTS_PER_LAYER a layer, the head's */
    Barrier barrier;
} Shared;

/* x + block (pre-norm) or LN(x + block) (post-norm), by one thread; the others wait. */
static void residual(Shared *s, const Norm *norm, const Shape *shape, int thread, int threads,
                     int *sense) {
    meet(&s->barrier, sense, threads);
    if (thread == 0) {
        for (int k = 0; k < shape->width; k++) s->x[k] += s->block[k];
        if (!shape->pre_norm) layer_norm(s->x, norm, s->x, shape->width);
    }
    meet(&s->barrier, sense, threads);
}

/* What a block reads: LN(x) (pre-norm) or x. */
static const float *block_input(Shared *s, const Norm *norm, const Shape *shape, int thread,
                                int threads, int *sense) {
    if (!shape->pre_norm) return s->x;
    if (thread == 0) layer_norm(s->x, norm, s->normed, shape->width);
    meet(&s->barrier, sense, threads);
    return s->normed;
}

static void layer_step(const Layer *l, const LayerState *st, const Shape *shape, Shared *s,
                       int *taken, int thread, int threads, int *sense, int16_t *codes,
                       float *steps, float *scores) {
    const int width = shape->width, heads = shape->heads, head_dim = width / heads;
    const int group = shape->group, position = shape->position;
    const float *in = block_input(s, &l->self_norm, shape, thread, threads, sense);
    product(&l->qkv, in, s->qkv, taken, group, codes, steps, -1);
    meet(&s->barrier, sense, threads);
    for (int h = thread; h < heads; h += threads) {
        float *keys = st->keys + h * st->head_stride, *values = st->values + h * st->head_stride;
        memcpy(keys + position * st->position_stride, s->qkv + width + h * head_dim,
               head_dim * sizeof(float));
        memcpy(values + position * st->position_stride, s->qkv + 2 * width + h * head_dim,
               head_dim * sizeof(float));
        attend(s->qkv + h * head_dim, keys, values, st->position_stride, position + 1, head_dim,
               scores, s->mixed + h * head_dim);
    }
    meet(&s->barrier, sense, threads);
    product(&l->self_out, s->mixed, s->block, taken + 1, group, codes, steps, -1);
    residual(s, &l->self_norm, shape, thread, threads, sense);

    in = block_input(s, &l->cross_norm, shape, thread, threads, sense);
    product(&l->cross_q, in, s->qkv, taken + 2, group, codes, steps, -1);
    meet(&s->barrier, sense, threads);
    for (int h = thread; h < heads; h += threads)
        attend(s->qkv + h * head_dim, st->cross_keys + h * st->cross_head_stride,
               st->cross_values + h * st->cross_head_stride, st->cross_position_stride,
               shape->cross_length, head_dim, scores, s->mixed + h * head_dim);
    meet(&s->barrier, sense, threads);
    product(&l->cross_out, s->mixed, s->block, taken + 3, group, codes, steps, -1);
    residual(s, &l->cross_norm, shape, thread, threads, sense);

    in = block_input(s, &l->ffn_norm, shape, thread, threads, sense);
    product(&l->fc1, in, s->hidden, taken + 4, group, codes, steps, shape->activation);
    meet(&s->barrier, sense, threads);
    product(&l->fc2, s->hidden, s->block, taken + 5, group, codes, steps, -1);
    residual(s, &l->ffn_norm, shape, thread, threads, sense);
}

/* x [width]: the token's embedding in, the last layer's output (final norm applied) out;
 * logits [head->out] from `head` (NULL: none). layers, states [count]; final_norm may be
 * NULL. */
void decoder_step(const Layer *layers, const LayerState *states, int count, const Shape *shape,
                  const Norm *final_norm, const Matrix *head, float *x, float *logits) {
    const int width = shape->width, longest = shape->ffn > width ? shape->ffn : width;
    const int attended = shape->position + 1 > shape->cross_length ? shape->position + 1
                                                                   : shape->cross_length;
    const int threads = omp_get_max_threads();
    const int wide = (head && head->in > longest) ? head->in : longest;
    float *scratch = malloc((size_t)(6 * width + shape->ffn) * sizeof(float));
    int16_t *codes = malloc((size_t)threads * (wide + 2) * sizeof(int16_t));
    float *steps = malloc((size_t)threads * (wide + 1) * sizeof(float));
    float *scores = malloc((size_t)threads * attended * sizeof(float));
    int *taken = calloc((size_t)count * PRODUCTS_PER_LAYER + 1, sizeof(int));
    if (!scratch || !codes || !steps || !scores || !taken) {
        for (int k = 0; k < width; k++) x[k] = NAN;
        for (int j = 0; head && j < head->out; j++) logits[j] = NAN;
        free(scratch), free(codes), free(steps), free(scores), free(taken);
        return;
    }
    Shared s = {x, scratch, scratch + width, scratch + 4 * width, scratch + 5 * width,
                scratch + 6 * width, taken, {0, 0}};
#pragma omp parallel num_threads(threads)
    {
        const int thread = omp_get_thread_num(), team = omp_get_num_threads();
        int sense = 0;
        int16_t *mine = codes + (int64_t)thread * (wide + 2);
        float *my_steps = steps + (int64_t)thread * (wide + 1);
        float *my_scores = scores + (int64_t)thread * attended;
        for (int i = 0; i < count; i++)
            layer_step(layers + i, states + i, shape, &s, taken + i * PRODUCTS_PER_LAYER, thread,
                       team, &sense, mine, my_steps, my_scores);
        if (final_norm && thread == 0) layer_norm(s.x, final_norm, s.x, width);
        meet(&s.barrier, &sense, team);
        if (head)
            product(head, s.x, logits, taken + count * PRODUCTS_PER_LAYER, shape->group, mine,
                    my_steps, -1);
    }
    free(scratch), free(codes), free(steps), free(scores), free(taken);
}
