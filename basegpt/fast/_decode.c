/* _decode.c: the optional compiled one-token decoding step of basegpt.fast.
 *
 * The computation of B2lM.forward for one new token of one sequence on a KV cache, float32 on
 * the CPU, written out in C (basegpt/fast/compiled.py describes it, decides which models it
 * covers and hands over the pointers; tests/test_fast_decode.py holds its logits to the
 * forward's):
 *
 *     x = embed(tok_emb[token], pos)                                               (C,)
 *     per block:  h = norm1(x) (pre-norm) or x (post-norm)
 *                 q, k, v = h Wqkv + b; (q, k) rotated (RoPE); k, v stored at cache row pos
 *                 a = softmax(q k^T / sqrt(D)) v per head, each kv head serving H/G heads
 *                 pre-norm:  x += a Wo + b;  x += ff(norm2(x))
 *                 post-norm: x = norm1(x + a Wo + b);  x = norm2(x + ff(x))
 *     logits = final_norm(x) W_head                                                (V,)
 *
 * Why: at batch 1 a small model's step is a few hundred microseconds of arithmetic, and the
 * Python and torch dispatch around each of its ~40 operations costs more than the arithmetic.
 *
 * Threads: the work is cut into n_threads shares (the caller's thread is thread 0), and
 * thread t takes share t whenever it can, so its part of the weights stays in its core's
 * cache from one token to the next: the query, key and value rows and the attention of its
 * heads, then their rows of Wo (a partial sum of x's update); the hidden units of its part of
 * the feed-forward, then their rows of the down projection (another partial sum); its rows of
 * the head. A thread that falls behind has its shares done by the others ("The step" below).
 * Every thread adds the partial sums to its own copy of the residual vector x in the same
 * order, so the copies stay identical and the norms need no meeting. Between steps the other
 * threads spin for a while, then sleep on a condition variable.
 *
 * Weights are read in place through (pointer, stride of an output, stride of an input): an
 * nn.Linear kept in (in, out) memory order (basegpt.fast.store_transposed) is read as rows of
 * outputs, one in (out, in) order as dot products. Only the stable CPython API (3.10) is used.
 */

#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030A0000
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Hot loops are compiled for AVX-512, AVX2+FMA and plain x86-64, the best picked at load
 * time (GCC's function multiversioning, through glibc's ifunc), so one build is fast on new
 * CPUs and runs on old: no -march=native, which would tie a wheel to the builder's CPU. */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPIN_PAUSE() _mm_pause()
#else
#define SPIN_PAUSE() ((void)0)
#endif

enum { NORM_NONE = 0, NORM_LAYER = 1, NORM_RMS = 2 };
enum { POS_NONE = 0, POS_LEARNED = 1, POS_SINUSOIDAL = 2, POS_ROPE = 3 };
enum { FF_RELU = 0, FF_GELU = 1, FF_SWIGLU = 2 };

#define ROW_ALIGN 16        /* a thread's first output row: a multiple of one 64-byte line */
#define BLOCK 64            /* outputs accumulated in registers at once (axpy form) */
#define SPINS_BEFORE_STEAL 256      /* waiting for a share: then take it over, or yield */
#define SPINS_BEFORE_SLEEP 200000   /* between tokens: milliseconds, longer than Python's part */

typedef struct {
    const float *w;          /* W[o, i] = w[o * s_out + i * s_in] */
    Py_ssize_t s_out, s_in;
    const float *b;          /* (n_out,) or NULL */
    int n_in, n_out;
} Linear;

typedef struct {
    int kind;                /* NORM_* */
    const float *w, *b;      /* (C,), b NULL for RMSNorm and LayerNorm without bias */
    double eps;
} Norm;

typedef struct {
    int pre_norm, H, G, D, Dv, F, ff;
    Norm norm1, norm2;
    Linear qkv, out, gate, up, down;        /* gate unused unless ff == FF_SWIGLU */
    const float *rope_cos, *rope_sin;       /* (n_context, D/2) each, or NULL */
    float *keys, *values;                   /* (G, max_len, D) and (G, max_len, Dv): row 0 */
} Layer;

typedef struct Plan Plan;

struct Plan {
    int V, C, n_context, n_layer, pos_kind, max_len, n_threads, widest;
    const float *emb;                       /* tok_emb[t, c] = emb[t * emb_s0 + c * emb_s1] */
    Py_ssize_t emb_s0, emb_s1;
    const float *pos_table;                 /* (n_context, C): learned or sinusoidal */
    float pos_scale;
    Norm final_norm;
    Linear head;
    Layer *layers;
    /* shared between threads: the products' outputs */
    float *qkv, *att, *hidden, *up, *logits;
    float *partials;                        /* (n_phases, n_threads, pstride) */
    int pstride;                            /* floats between two shares' partials */
    int n_phases;
    atomic_llong *claims;                   /* (n_phases, n_threads): the step that claimed it */
    atomic_int *done;                       /* (n_phases,): shares done in the current step */
    /* per thread: x, h, scores; widest floats each */
    float *priv;
    /* the current job */
    int token, pos;
    /* the pool */
    struct Worker *workers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_llong epoch;                     /* the current step's number; -1: workers exit */
    int sleepers;
    int have_pool;
};

/* ------------------------------------------------------------------------------------------
 * Arithmetic
 * ---------------------------------------------------------------------------------------- */

static void rows_of(int n, int t, int n_threads, int *lo, int *hi) {
    int chunk = (n + n_threads - 1) / n_threads;
    chunk = (chunk + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN;
    *lo = t * chunk < n ? t * chunk : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
}

/* y[o] = sum_{i in [in_lo, in_hi)} x[i] W[o, i], plus b[o] if with_bias (so that partial sums
 * over input ranges add the bias once), for o in [lo, hi) */
HOT static void matvec(const Linear *L, const float *restrict x, float *restrict y, int lo, int hi,
                       int in_lo, int in_hi, int with_bias) {
    const float *w = L->w, *b = with_bias ? L->b : NULL;
    if (L->s_out == 1) {                    /* (in, out) memory: rows of outputs */
        Py_ssize_t s = L->s_in;
        for (int o = lo; o < hi; o += BLOCK) {
            int n = hi - o < BLOCK ? hi - o : BLOCK;
            float acc[BLOCK] = {0};
            if (n == BLOCK) {
                for (int i = in_lo; i < in_hi; i++) {
                    const float *row = w + i * s + o;
                    float xi = x[i];
                    for (int j = 0; j < BLOCK; j++)
                        acc[j] += xi * row[j];
                }
            } else {
                for (int i = in_lo; i < in_hi; i++) {
                    const float *row = w + i * s + o;
                    float xi = x[i];
                    for (int j = 0; j < n; j++)
                        acc[j] += xi * row[j];
                }
            }
            for (int j = 0; j < n; j++)
                y[o + j] = b ? acc[j] + b[o + j] : acc[j];
        }
    } else if (L->s_in == 1) {              /* (out, in) memory: one dot product per output */
        for (int o = lo; o < hi; o++) {
            const float *row = w + o * L->s_out;
            float part[16] = {0};           /* 16 partial sums: vectorised, no reassociation */
            int i = in_lo;
            for (; i + 16 <= in_hi; i += 16)
                for (int j = 0; j < 16; j++)
                    part[j] += row[i + j] * x[i + j];
            float sum = 0.0f;
            for (; i < in_hi; i++)
                sum += row[i] * x[i];
            for (int j = 0; j < 16; j++)
                sum += part[j];
            y[o] = b ? sum + b[o] : sum;
        }
    } else {                                /* any other strides: plain loops */
        for (int o = lo; o < hi; o++) {
            float sum = 0.0f;
            for (int i = in_lo; i < in_hi; i++)
                sum += w[o * L->s_out + i * L->s_in] * x[i];
            y[o] = b ? sum + b[o] : sum;
        }
    }
}

/* y = norm(x) over C; sums in double, so they are as exact as float32 inputs allow */
static void norm(const Norm *N, const float *x, float *y, int C) {
    if (N->kind == NORM_NONE) {
        if (y != x)
            memcpy(y, x, sizeof(float) * C);
        return;
    }
    double mean = 0.0, var = 0.0;
    if (N->kind == NORM_LAYER) {
        for (int c = 0; c < C; c++)
            mean += x[c];
        mean /= C;
        for (int c = 0; c < C; c++)
            var += (x[c] - mean) * (x[c] - mean);
        var /= C;
    } else {
        for (int c = 0; c < C; c++)
            var += (double)x[c] * x[c];
        var /= C;
    }
    float scale = (float)(1.0 / sqrt(var + N->eps));
    float m = (float)mean;
    for (int c = 0; c < C; c++) {
        float v = (x[c] - m) * scale * N->w[c];
        y[c] = N->b ? v + N->b[c] : v;
    }
}

/* (x[i], x[i + D/2]) turned by the angle whose cos and sin are given, i < D/2 */
static void rotate_half(float *x, const float *cos_, const float *sin_, int D) {
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * cos_[i] - x2 * sin_[i];
        x[i + half] = x1 * sin_[i] + x2 * cos_[i];
    }
}

HOT static float dot(const float *restrict a, const float *restrict b, int n) {
    float part[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            part[j] += a[i + j] * b[i + j];
    float sum = 0.0f;
    for (; i < n; i++)
        sum += a[i] * b[i];
    for (int j = 0; j < 16; j++)
        sum += part[j];
    return sum;
}

/* Query heads of kv heads [g_lo, g_hi): rotate q and k, store k and v at row pos, attend. */
static void attend(const Plan *P, const Layer *L, int g_lo, int g_hi, float *scores) {
    int H = L->H, G = L->G, D = L->D, Dv = L->Dv, pos = P->pos, per = H / G;
    float *q = P->qkv, *k = P->qkv + H * D, *v = P->qkv + H * D + G * D;
    const float *cos_ = L->rope_cos ? L->rope_cos + (Py_ssize_t)pos * (D / 2) : NULL;
    const float *sin_ = L->rope_sin ? L->rope_sin + (Py_ssize_t)pos * (D / 2) : NULL;
    float scale = (float)(1.0 / sqrt((double)D));
    for (int g = g_lo; g < g_hi; g++) {
        float *kg = P->qkv + H * D + g * D;
        if (cos_)
            rotate_half(kg, cos_, sin_, D);
        float *keys = L->keys + (Py_ssize_t)g * P->max_len * D;
        float *values = L->values + (Py_ssize_t)g * P->max_len * Dv;
        memcpy(keys + (Py_ssize_t)pos * D, k + g * D, sizeof(float) * D);
        memcpy(values + (Py_ssize_t)pos * Dv, v + g * Dv, sizeof(float) * Dv);
        for (int h = g * per; h < (g + 1) * per; h++) {
            float *qh = q + h * D;
            if (cos_)
                rotate_half(qh, cos_, sin_, D);
            float top = -INFINITY;
            for (int s = 0; s <= pos; s++) {
                scores[s] = dot(qh, keys + (Py_ssize_t)s * D, D) * scale;
                top = scores[s] > top ? scores[s] : top;
            }
            float total = 0.0f;
            for (int s = 0; s <= pos; s++) {
                scores[s] = expf(scores[s] - top);
                total += scores[s];
            }
            float *out = P->att + h * Dv;
            for (int d = 0; d < Dv; d++)
                out[d] = 0.0f;
            for (int s = 0; s <= pos; s++) {
                float p = scores[s] / total;
                const float *vs = values + (Py_ssize_t)s * Dv;
                for (int d = 0; d < Dv; d++)
                    out[d] += p * vs[d];
            }
        }
    }
}

static float gelu_tanh(float x) {   /* GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static float silu(float x) {
    return x / (1.0f + expf(-x));
}

/* ------------------------------------------------------------------------------------------
 * The step: phases of shares that any thread may compute
 *
 * A step is a sequence of phases (per block: attention, then the feed-forward; then the head),
 * each cut into n_threads shares. A share is computed by whichever thread claims it first (an
 * atomic swap of the share's claim from an older step's number to this step's); thread t
 * claims share t, then waits until the phase's shares are all done, and takes over any share
 * still unclaimed after SPINS_BEFORE_STEAL pauses. So when a thread loses its core to another
 * program, the others do its shares instead of waiting for it, and a step only waits for a
 * thread in the middle of a share. A share's
 * result is the same whichever thread computes it, and every thread adds the partial sums in
 * share order, so the copies of x stay equal. Partial sums have a buffer per phase, so a
 * thread that is behind still reads its phase's, and a thread still in an older step claims
 * nothing (its step number is older than the claims).
 * ---------------------------------------------------------------------------------------- */

enum { SHARE_QKV_ROWS, SHARE_ATTENTION, SHARE_FF, SHARE_HEAD };

/* x += the sum of the shares' partial vectors, in share order */
static void add_partials(float *x, const float *partials, int n_shares, int stride, int C) {
    for (int c = 0; c < C; c++) {
        float sum = partials[c];
        for (int s = 1; s < n_shares; s++)
            sum += partials[(Py_ssize_t)s * stride + c];
        x[c] += sum;
    }
}

/* Share s of a phase, from the input vector in (C,) to its slice of the shared buffers */
static void compute_share(Plan *P, const Layer *L, int kind, int s, const float *in,
                          float *partial, float *scores) {
    int C = P->C, T = P->n_threads, lo, hi;
    if (kind == SHARE_HEAD) {
        rows_of(P->V, s, T, &lo, &hi);
        matvec(&P->head, in, P->logits, lo, hi, 0, C, 1);
        return;
    }
    int H = L->H, G = L->G, D = L->D, Dv = L->Dv;
    if (kind == SHARE_QKV_ROWS) {           /* fewer kv heads than threads: rows of Wqkv */
        rows_of(L->qkv.n_out, s, T, &lo, &hi);
        matvec(&L->qkv, in, P->qkv, lo, hi, 0, C, 1);
        return;
    }
    if (kind == SHARE_ATTENTION) {          /* kv heads [g_lo, g_hi) and their query heads */
        int g_lo = (int)((long)G * s / T), g_hi = (int)((long)G * (s + 1) / T);
        int h_lo = g_lo * (H / G), h_hi = g_hi * (H / G);
        if (G % T == 0) {                   /* else a SHARE_QKV_ROWS phase made q, k, v */
            matvec(&L->qkv, in, P->qkv, h_lo * D, h_hi * D, 0, C, 1);
            matvec(&L->qkv, in, P->qkv, H * D + g_lo * D, H * D + g_hi * D, 0, C, 1);
            matvec(&L->qkv, in, P->qkv, H * D + G * D + g_lo * Dv, H * D + G * D + g_hi * Dv,
                   0, C, 1);
        }
        attend(P, L, g_lo, g_hi, scores);
        matvec(&L->out, P->att, partial, 0, C, h_lo * Dv, h_hi * Dv, s == 0);
        return;
    }
    rows_of(L->F, s, T, &lo, &hi);          /* SHARE_FF: hidden units [lo, hi) */
    if (L->ff == FF_SWIGLU) {
        matvec(&L->gate, in, P->hidden, lo, hi, 0, C, 1);
        matvec(&L->up, in, P->up, lo, hi, 0, C, 1);
        for (int f = lo; f < hi; f++)
            P->hidden[f] = silu(P->hidden[f]) * P->up[f];
    } else {
        matvec(&L->up, in, P->hidden, lo, hi, 0, C, 1);
        for (int f = lo; f < hi; f++)
            P->hidden[f] = L->ff == FF_GELU ? gelu_tanh(P->hidden[f])
                                            : (P->hidden[f] > 0.0f ? P->hidden[f] : 0.0f);
    }
    matvec(&L->down, P->hidden, partial, 0, C, lo, hi, s == 0);
}

/* Claim share s of phase ph for step `step` and compute it; 0 if it was claimed already */
static int try_share(Plan *P, int ph, long long step, int s, const Layer *L, int kind,
                     const float *in, float *scores) {
    atomic_llong *claim = &P->claims[(Py_ssize_t)ph * P->n_threads + s];
    long long seen = atomic_load_explicit(claim, memory_order_relaxed);
    if (seen >= step || !atomic_compare_exchange_strong(claim, &seen, step))
        return 0;                           /* claimed in this step (or this is an old one) */
    float *partial = P->partials + ((Py_ssize_t)ph * P->n_threads + s) * P->pstride;
    compute_share(P, L, kind, s, in, partial, scores);
    atomic_fetch_add_explicit(&P->done[ph], 1, memory_order_release);
    return 1;
}

/* Thread t's part of phase ph of step `step`: its own share, then, while some other share is
 * not done, waiting; a share still unclaimed after a while (its thread has not come) is taken
 * over. Returns 0 if the plan has moved on to another step (a thread left behind). */
static int run_phase(Plan *P, int ph, long long step, int t, const Layer *L, int kind,
                     const float *in, float *scores) {
    int T = P->n_threads, spins = 0;
    try_share(P, ph, step, t, L, kind, in, scores);
    while (atomic_load_explicit(&P->done[ph], memory_order_acquire) != T) {
        if (atomic_load_explicit(&P->epoch, memory_order_relaxed) != step)
            return 0;
        SPIN_PAUSE();
        if (++spins < SPINS_BEFORE_STEAL)
            continue;
        spins = 0;
        int took = 0;
        for (int k = 1; k < T; k++)
            took |= try_share(P, ph, step, (t + k) % T, L, kind, in, scores);
        if (!took)                          /* claimed, not done: let its thread run */
            sched_yield();
    }
    return 1;
}

/* One step as thread t runs it; thread 0 (the caller) always runs it to the end. */
static void run_step(Plan *P, int t, long long step) {
    int C = P->C, T = P->n_threads, ph = 0;
    float *x = P->priv + (Py_ssize_t)t * 3 * P->widest;
    float *h = x + P->widest, *scores = h + P->widest;
    for (int c = 0; c < C; c++)
        x[c] = P->emb[P->token * P->emb_s0 + c * P->emb_s1];
    if (P->pos_kind == POS_LEARNED)
        for (int c = 0; c < C; c++)
            x[c] += P->pos_table[(Py_ssize_t)P->pos * C + c];
    else if (P->pos_kind == POS_SINUSOIDAL)
        for (int c = 0; c < C; c++)
            x[c] = x[c] * P->pos_scale + P->pos_table[(Py_ssize_t)P->pos * C + c];
    for (int l = 0; l < P->n_layer; l++) {
        const Layer *L = &P->layers[l];
        const float *in = x;
        if (L->pre_norm) {
            norm(&L->norm1, x, h, C);
            in = h;
        }
        if (L->G % T != 0 && !run_phase(P, ph++, step, t, L, SHARE_QKV_ROWS, in, scores))
            return;
        if (!run_phase(P, ph, step, t, L, SHARE_ATTENTION, in, scores))
            return;
        add_partials(x, P->partials + (Py_ssize_t)ph++ * T * P->pstride, T, P->pstride, C);
        if (L->pre_norm) {
            norm(&L->norm2, x, h, C);
            in = h;
        } else {
            norm(&L->norm1, x, x, C);
            in = x;
        }
        if (!run_phase(P, ph, step, t, L, SHARE_FF, in, scores))
            return;
        add_partials(x, P->partials + (Py_ssize_t)ph++ * T * P->pstride, T, P->pstride, C);
        if (!L->pre_norm)
            norm(&L->norm2, x, x, C);
    }
    norm(&P->final_norm, x, h, C);
    run_phase(P, ph, step, t, NULL, SHARE_HEAD, h, scores);
}

typedef struct Worker {
    Plan *plan;
    int t;
    pthread_t thread;
} Worker;

static void *worker_main(void *arg) {
    Worker *W = arg;
    Plan *P = W->plan;
    long long seen = 0;
    for (;;) {
        long long now;
        int spins = 0;
        while ((now = atomic_load_explicit(&P->epoch, memory_order_acquire)) == seen) {
            SPIN_PAUSE();
            if (++spins < SPINS_BEFORE_SLEEP)
                continue;
            pthread_mutex_lock(&P->lock);   /* no job for a while: sleep until one comes */
            P->sleepers++;
            while ((now = atomic_load_explicit(&P->epoch, memory_order_acquire)) == seen)
                pthread_cond_wait(&P->wake, &P->lock);
            P->sleepers--;
            pthread_mutex_unlock(&P->lock);
            break;
        }
        if (now < 0)
            return NULL;
        seen = now;
        run_step(P, W->t, now);
    }
}

static void post(Plan *P, long long epoch) {
    pthread_mutex_lock(&P->lock);
    atomic_store_explicit(&P->epoch, epoch, memory_order_release);
    if (P->sleepers)
        pthread_cond_broadcast(&P->wake);
    pthread_mutex_unlock(&P->lock);
}

static void plan_free(Plan *P) {
    if (!P)
        return;
    if (P->have_pool) {
        post(P, -1);
        for (int t = 1; t < P->n_threads; t++)
            pthread_join(P->workers[t].thread, NULL);
        pthread_mutex_destroy(&P->lock);
        pthread_cond_destroy(&P->wake);
    }
    free(P->workers);
    free(P->layers);
    free(P->qkv);
    free(P->priv);
    free(P->claims);
    free(P->done);
    free(P);
}

/* ------------------------------------------------------------------------------------------
 * Python: new(model_spec, layer_specs, n_threads) -> capsule;
 *         bind_cache(plan, keys, values, max_len); step(plan, token, pos, logits_address)
 * compiled.py builds the specs; their field order is defined there and read here in order.
 * ---------------------------------------------------------------------------------------- */

static const char *CAPSULE = "basegpt.fast._decode.Plan";

typedef struct {
    PyObject *tuple;
    Py_ssize_t i;
} Reader;

static PyObject *next_item(Reader *r) {
    if (r->i >= PyTuple_Size(r->tuple)) {
        PyErr_SetString(PyExc_ValueError, "_decode: spec tuple too short");
        return NULL;
    }
    return PyTuple_GetItem(r->tuple, r->i++);
}

static long long read_int(Reader *r) {
    PyObject *o = next_item(r);
    return o ? PyLong_AsLongLong(o) : -1;
}

static double read_float(Reader *r) {
    PyObject *o = next_item(r);
    return o ? PyFloat_AsDouble(o) : -1.0;
}

static void *read_ptr(Reader *r) {
    PyObject *o = next_item(r);
    return o ? (void *)(uintptr_t)PyLong_AsUnsignedLongLong(o) : NULL;
}

static void read_norm(Reader *r, Norm *N) {
    N->kind = (int)read_int(r);
    N->w = read_ptr(r);
    N->b = read_ptr(r);
    N->eps = read_float(r);
}

static void read_linear(Reader *r, Linear *L) {
    L->w = read_ptr(r);
    L->s_out = (Py_ssize_t)read_int(r);
    L->s_in = (Py_ssize_t)read_int(r);
    L->b = read_ptr(r);
    L->n_in = (int)read_int(r);
    L->n_out = (int)read_int(r);
}

static void capsule_free(PyObject *capsule) {
    plan_free(PyCapsule_GetPointer(capsule, CAPSULE));
}

static int imax(int a, int b) { return a > b ? a : b; }

static PyObject *py_new(PyObject *self, PyObject *args) {
    PyObject *model_spec, *layer_specs;
    int n_threads;
    if (!PyArg_ParseTuple(args, "O!O!i", &PyTuple_Type, &model_spec, &PyTuple_Type,
                          &layer_specs, &n_threads))
        return NULL;
    Plan *P = calloc(1, sizeof(Plan));
    if (!P)
        return PyErr_NoMemory();
    Reader r = {model_spec, 0};
    P->V = (int)read_int(&r);
    P->C = (int)read_int(&r);
    P->n_context = (int)read_int(&r);
    P->emb = read_ptr(&r);
    P->emb_s0 = (Py_ssize_t)read_int(&r);
    P->emb_s1 = (Py_ssize_t)read_int(&r);
    P->pos_kind = (int)read_int(&r);
    P->pos_table = read_ptr(&r);
    P->pos_scale = (float)read_float(&r);
    read_norm(&r, &P->final_norm);
    read_linear(&r, &P->head);
    P->n_layer = (int)PyTuple_Size(layer_specs);
    P->n_threads = n_threads < 1 ? 1 : n_threads;
    P->layers = calloc(P->n_layer ? P->n_layer : 1, sizeof(Layer));
    if (!P->layers) {
        plan_free(P);
        return PyErr_NoMemory();
    }
    int widest = imax(P->C, P->n_context), n_qkv = 1, n_att = 1, n_ff = 1;
    for (int l = 0; l < P->n_layer && !PyErr_Occurred(); l++) {
        Layer *L = &P->layers[l];
        Reader lr = {PyTuple_GetItem(layer_specs, l), 0};
        if (!PyTuple_Check(lr.tuple)) {
            PyErr_SetString(PyExc_TypeError, "_decode: each layer spec must be a tuple");
            break;
        }
        L->pre_norm = (int)read_int(&lr);
        L->H = (int)read_int(&lr);
        L->G = (int)read_int(&lr);
        L->D = (int)read_int(&lr);
        L->Dv = (int)read_int(&lr);
        L->F = (int)read_int(&lr);
        L->ff = (int)read_int(&lr);
        read_norm(&lr, &L->norm1);
        read_norm(&lr, &L->norm2);
        read_linear(&lr, &L->qkv);
        read_linear(&lr, &L->out);
        read_linear(&lr, &L->gate);
        read_linear(&lr, &L->up);
        read_linear(&lr, &L->down);
        L->rope_cos = read_ptr(&lr);
        L->rope_sin = read_ptr(&lr);
        n_qkv = imax(n_qkv, L->qkv.n_out);
        n_att = imax(n_att, L->H * L->Dv);
        n_ff = imax(n_ff, L->F);
    }
    if (PyErr_Occurred()) {
        plan_free(P);
        return NULL;
    }
    P->widest = widest;
    P->n_phases = 1;                        /* the head */
    for (int l = 0; l < P->n_layer; l++)
        P->n_phases += 2 + (P->layers[l].G % P->n_threads != 0);
    /* one block for the shared buffers, each on its own cache lines */
    P->pstride = (P->C + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN;
    Py_ssize_t pad = ROW_ALIGN, total = 0,
               sizes[6] = {n_qkv, n_att, n_ff, n_ff, P->V,
                           (Py_ssize_t)P->n_phases * P->n_threads * P->pstride};
    for (int i = 0; i < 6; i++)
        total += (sizes[i] + pad - 1) / pad * pad;
    P->qkv = aligned_alloc(64, sizeof(float) * total);
    /* aligned_alloc takes a multiple of the alignment: 16 floats are 64 bytes */
    Py_ssize_t n_priv = ((Py_ssize_t)3 * widest * P->n_threads + 15) / 16 * 16;
    P->priv = aligned_alloc(64, sizeof(float) * n_priv);
    P->workers = calloc(P->n_threads, sizeof(Worker));
    P->claims = calloc((size_t)P->n_phases * P->n_threads, sizeof(atomic_llong));
    P->done = calloc(P->n_phases, sizeof(atomic_int));
    if (!P->qkv || !P->priv || !P->workers || !P->claims || !P->done) {
        plan_free(P);
        return PyErr_NoMemory();
    }
    float *at = P->qkv, **bufs[6] = {&P->qkv, &P->att, &P->hidden, &P->up, &P->logits, &P->partials};
    for (int i = 0; i < 6; i++) {
        *bufs[i] = at;
        at += (sizes[i] + pad - 1) / pad * pad;
    }
    if (P->n_threads > 1) {
        pthread_mutex_init(&P->lock, NULL);
        pthread_cond_init(&P->wake, NULL);
        P->have_pool = 1;
        for (int t = 1; t < P->n_threads; t++) {
            P->workers[t].plan = P;
            P->workers[t].t = t;
            if (pthread_create(&P->workers[t].thread, NULL, worker_main, &P->workers[t]) != 0) {
                P->n_threads = t;           /* join the ones started, then give up */
                plan_free(P);
                PyErr_SetString(PyExc_RuntimeError, "_decode: could not start a thread");
                return NULL;
            }
        }
    }
    PyObject *capsule = PyCapsule_New(P, CAPSULE, capsule_free);
    if (!capsule)
        plan_free(P);
    return capsule;
}

static PyObject *py_bind_cache(PyObject *self, PyObject *args) {
    PyObject *capsule, *keys, *values;
    int max_len;
    if (!PyArg_ParseTuple(args, "OO!O!i", &capsule, &PyTuple_Type, &keys, &PyTuple_Type,
                          &values, &max_len))
        return NULL;
    Plan *P = PyCapsule_GetPointer(capsule, CAPSULE);
    if (!P)
        return NULL;
    if (PyTuple_Size(keys) != P->n_layer || PyTuple_Size(values) != P->n_layer) {
        PyErr_SetString(PyExc_ValueError, "_decode.bind_cache: one key and one value buffer "
                        "per layer");
        return NULL;
    }
    for (int l = 0; l < P->n_layer; l++) {
        P->layers[l].keys = PyLong_AsVoidPtr(PyTuple_GetItem(keys, l));
        P->layers[l].values = PyLong_AsVoidPtr(PyTuple_GetItem(values, l));
    }
    P->max_len = max_len;
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_step(PyObject *self, PyObject *args) {
    PyObject *capsule, *address;
    int token, pos;
    if (!PyArg_ParseTuple(args, "OiiO", &capsule, &token, &pos, &address))
        return NULL;
    Plan *P = PyCapsule_GetPointer(capsule, CAPSULE);
    float *logits = PyLong_AsVoidPtr(address);
    if (!P || PyErr_Occurred())
        return NULL;
    /* The last guard before raw memory: compiled.py checks these with friendlier messages. */
    if (token < 0 || token >= P->V || pos < 0 || pos >= P->max_len || pos >= P->n_context
            || !P->layers[0].keys) {
        PyErr_Format(PyExc_ValueError, "_decode.step: token %d or position %d out of range "
                     "(vocab %d, cache %d, n_context %d)", token, pos, P->V, P->max_len,
                     P->n_context);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    P->token = token;
    P->pos = pos;
    long long step = atomic_load_explicit(&P->epoch, memory_order_relaxed) + 1;
    for (int ph = 0; ph < P->n_phases; ph++)
        atomic_store_explicit(&P->done[ph], 0, memory_order_relaxed);
    if (P->n_threads > 1)
        post(P, step);                      /* its release publishes token, pos and done */
    else
        atomic_store_explicit(&P->epoch, step, memory_order_relaxed);
    run_step(P, 0, step);
    memcpy(logits, P->logits, sizeof(float) * P->V);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"new", py_new, METH_VARARGS, "new(model_spec, layer_specs, n_threads) -> plan"},
    {"bind_cache", py_bind_cache, METH_VARARGS,
     "bind_cache(plan, key_addresses, value_addresses, max_len): the KV cache steps write"},
    {"step", py_step, METH_VARARGS,
     "step(plan, token, pos, logits_address): one token at cache row pos -> logits (V,)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_decode", "basegpt.fast's compiled one-token decoding step.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__decode(void) {
    return PyModule_Create(&module);
}
