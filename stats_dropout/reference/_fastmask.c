/* The whole train pass of unshared Bernoulli dropout in C: random bits, compare, rescale, store.
 *
 * Same results, bit for bit and from the same random stream, as the numpy path of
 * stats_dropout/reference/masks.py (masked_full without the kernel), which it replaces:
 *
 *   The (rows, cols) output (x broadcast over rows) is cut into the chunks of masks._chunks,
 *   a function of (rows, cols, chunk) only. In chunk order, each chunk of `count` units draws
 *   ceil(count / 8) full-range 64-bit words from the caller's generator (numpy's
 *   `integers(0, 2**64, dtype=uint64)` returns next_uint64 outputs unchanged) whose bytes, in
 *   memory order, are the units' top bytes; then one `integers(0, 2**tie_bits, dtype=uint32)` per
 *   unit whose top byte ties with the threshold's (`hi`), in unit order: for a power-of-two
 *   range numpy's Lemire sampler never rejects and returns next_uint32 >> (32 - tie_bits).
 *     top <  hi, or a tie with rest < lo  -> out = x / divisor  (in double, rounded once to out's type)
 *     otherwise                           -> out = copysign(0, x)
 *   The same pass reports whether any x is NaN or infinite, so the caller can validate x
 *   without a pass of its own (and put the generator back: see masks.masked_full).
 *
 * The generator is either any numpy bit generator, through the C functions of its
 * "BitGenerator" capsule (numpy's C API, numpy/random/bitgen.h), or numpy's PCG64 run here from
 * its public `state` (128-bit LCG, XSL-RR output, next_uint32 buffering the upper half-word):
 * the same numbers without a call and a store per word, in two interleaved chains
 * (s[n+2] = M²·s[n] + (M+1)·inc): about 2 ns per word instead of 4 (module constant
 * PCG64_STATE: whether this build can; it needs 128-bit integers). tests/unit/test_fastmask.py
 * checks every claim above (`draws` below) against numpy's `integers`.
 *
 * Threads (pthreads, GIL released). With the PCG64 run here (scan_worker), workers take runs of
 * chunks (2 MiB of output or more) in increasing order from a shared counter and never wait for
 * each other: a worker finds the generator at its run's start from the latest state published
 * before it (each chunk's end is published as soon as it is drawn), skipping over the chunks in
 * between itself if any (words and how many ties only). Through a capsule (another numpy bit
 * generator, whose state cannot be copied) workers take chunks in turn (worker): chunk k draws
 * only after chunk k - 1 has drawn all of its bits, ties included; the compare-rescale-store
 * pass runs in parallel. Either way the generator is consumed exactly as by one thread: results
 * and the generator's final state are the same for any number of threads. The caller holds the
 * bit generator's lock for the whole call.
 *
 * Kept units are x / divisor, or x * reciprocal where masks._exact_reciprocal proved that
 * it gives the same bits (see select_f64).
 *
 * Built as an optional extension (setup.py): without a compiler the numpy path is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fenv.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FM_AVX2 1 /* select_*_avx2, used where the CPU has AVX2 */
#else
#define FM_AVX2 0
#endif
static int fm_avx2 = 0; /* set at import: the CPU has AVX2 */


#ifndef _WIN32
#include <pthread.h>
#define FM_THREADS 1
#else
#define FM_THREADS 0 /* one thread (the caller's): same results */
#endif

#if defined(__SIZEOF_INT128__)
#define FM_PCG64 1
typedef unsigned __int128 u128;
#else
#define FM_PCG64 0 /* PCG64 through its capsule: same numbers */
#endif

/* ---- random bits ---------------------------------------------------------------------------- */

/* numpy's bit generator interface (numpy/random/bitgen.h), held by the PyCapsule "BitGenerator"
 * of `Generator.bit_generator.capsule`. */
typedef struct bitgen {
    void *state;
    uint64_t (*next_uint64)(void *st);
    uint32_t (*next_uint32)(void *st);
    double (*next_double)(void *st);
    uint64_t (*next_raw)(void *st);
} bitgen_t;

typedef struct {
    bitgen_t *bg; /* a numpy bit generator's C functions; NULL: the PCG64 state below */
#if FM_PCG64
    u128 state, inc;
#endif
    int has32;    /* PCG64's next_uint32 buffer: the upper half of the last word, unused yet */
    uint32_t u32;
} gen_t;

#if FM_PCG64
#define PCG_MULT (((u128)2549297995355413924ull << 64) | 4865540595714422341ull)

static inline uint64_t pcg_output(u128 s) { /* XSL-RR */
    uint64_t hi = (uint64_t)(s >> 64), v = hi ^ (uint64_t)s;
    unsigned rot = (unsigned)(hi >> 58);
    return (v >> rot) | (v << ((64 - rot) & 63));
}
#endif

/* n words of next_uint64. */
static void gen_words(gen_t *g, uint64_t *restrict w, Py_ssize_t n) {
    if (g->bg != NULL) {
        void *st = g->bg->state;
        uint64_t (*next64)(void *) = g->bg->next_uint64;
        for (Py_ssize_t i = 0; i < n; i++) w[i] = next64(st);
        return;
    }
#if FM_PCG64
    const u128 m = PCG_MULT, inc = g->inc, m2 = m * m, c2 = inc * (m + 1);
    u128 s = g->state;
    Py_ssize_t i = 0;
    if (n >= 2) { /* two independent chains: even and odd steps */
        u128 a = s * m + inc, b = a * m + inc;
        for (; i + 2 <= n; i += 2) {
            w[i] = pcg_output(a);
            w[i + 1] = pcg_output(b);
            s = b;
            a = a * m2 + c2;
            b = b * m2 + c2;
        }
    }
    if (i < n) {
        s = s * m + inc;
        w[i] = pcg_output(s);
    }
    g->state = s;
#endif
}

/* Positions u < count of the bytes equal to h (units whose top byte ties with the threshold's),
 * in increasing order; returns how many. Sixty-four bytes per branch where SSE2 exists (every
 * x86-64), else eight per "haszero" test: a word has a byte equal to h iff (w ^ h·0x01..01) has
 * a zero byte. */
static Py_ssize_t find_ties(const uint8_t *restrict top, Py_ssize_t count, uint8_t h, uint32_t *restrict pos) {
    Py_ssize_t n = 0, u = 0;
#if defined(__SSE2__)
    const __m128i hh = _mm_set1_epi8((char)h);
    for (; u + 64 <= count; u += 64) { /* one branch per 64 bytes: a tie in 1/256 bytes */
        const __m128i *p = (const __m128i *)(top + u);
        __m128i e0 = _mm_cmpeq_epi8(_mm_loadu_si128(p), hh), e1 = _mm_cmpeq_epi8(_mm_loadu_si128(p + 1), hh);
        __m128i e2 = _mm_cmpeq_epi8(_mm_loadu_si128(p + 2), hh), e3 = _mm_cmpeq_epi8(_mm_loadu_si128(p + 3), hh);
        if (!_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(e0, e1), _mm_or_si128(e2, e3)))) continue;
        uint64_t m = (uint64_t)(unsigned)_mm_movemask_epi8(e0) | (uint64_t)(unsigned)_mm_movemask_epi8(e1) << 16 |
                     (uint64_t)(unsigned)_mm_movemask_epi8(e2) << 32 | (uint64_t)(unsigned)_mm_movemask_epi8(e3) << 48;
        while (m) {
            pos[n++] = (uint32_t)(u + __builtin_ctzll(m));
            m &= m - 1;
        }
    }
#else
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull, pattern = ones * h;
    for (; u + 8 <= count; u += 8) {
        uint64_t w, v;
        memcpy(&w, top + u, 8);
        v = w ^ pattern;
        if ((v - ones) & ~v & highs)
            for (Py_ssize_t k = u; k < u + 8; k++)
                if (top[k] == h) pos[n++] = (uint32_t)k;
    }
#endif
    for (; u < count; u++)
        if (top[u] == h) pos[n++] = (uint32_t)u;
    return n;
}

static inline uint32_t gen_u32(gen_t *g) {
    if (g->bg != NULL) return g->bg->next_uint32(g->bg->state);
#if FM_PCG64
    if (g->has32) {
        g->has32 = 0;
        return g->u32;
    }
    g->state = g->state * PCG_MULT + g->inc;
    uint64_t v = pcg_output(g->state);
    g->has32 = 1;
    g->u32 = (uint32_t)(v >> 32);
    return (uint32_t)v;
#else
    return 0; /* unreachable: no PCG64 state without 128-bit integers */
#endif
}

/* gen_t from the Python side's description: a "BitGenerator" capsule, or the tuple
 * (state >> 64, state & (2^64 - 1), inc >> 64, inc & (2^64 - 1), has_uint32, uinteger) of PCG64. */
static int gen_from(PyObject *spec, gen_t *g) {
    memset(g, 0, sizeof *g);
    if (PyCapsule_CheckExact(spec)) {
        g->bg = (bitgen_t *)PyCapsule_GetPointer(spec, "BitGenerator");
        return g->bg != NULL ? 0 : -1;
    }
#if FM_PCG64
    unsigned long long sh, sl, ih, il;
    int has;
    unsigned long u;
    if (PyTuple_Check(spec) && PyArg_ParseTuple(spec, "KKKKpk", &sh, &sl, &ih, &il, &has, &u)) {
        g->state = ((u128)sh << 64) | sl;
        g->inc = ((u128)ih << 64) | il;
        g->has32 = has;
        g->u32 = (uint32_t)u;
        return 0;
    }
    if (PyErr_Occurred()) return -1;
#endif
    PyErr_SetString(PyExc_TypeError, "generator: a BitGenerator capsule or a PCG64 state tuple");
    return -1;
}

/* The generator's state for the Python side: None for a capsule (numpy's own state moved),
 * else (state >> 64, state & (2^64 - 1), has_uint32, uinteger). */
static PyObject *gen_state(const gen_t *g) {
#if FM_PCG64
    if (g->bg == NULL)
        return Py_BuildValue("(KKik)", (unsigned long long)(g->state >> 64), (unsigned long long)g->state,
                             g->has32, (unsigned long)g->u32);
#endif
    Py_RETURN_NONE;
}

/* ---- compare, rescale, store ------------------------------------------------------------------ */

/* Runtime-dispatched clones: AVX2 where the CPU has it (4 divisions per instruction), SSE2
 * otherwise; never an instruction the CPU lacks. `all` (0 or all ones) keeps every unit: the
 * threshold's top byte can be 256 (keep_prob within 2^-33 of 1), which no byte is below.
 *
 * With r != 0, x * r replaces x / d: the caller (masks._exact_reciprocal) has proven that it
 * gives the quotient's bits for every finite x of that type (float64: r = 1/d exactly; float32:
 * r a float32, x * r exact in double and within half an ulp of x / d there, so the float32
 * product, the exact x * r rounded once, is the quotient rounded to double then to float32).
 * That proof rounds to nearest without flushing subnormals: dropout() uses r only in that
 * default floating-point environment. A division costs about four times the rest of the pass
 * (~0.5 ns a unit, vectorised). */
#define SELECT_BODY(Q)                                                                                          \
    for (Py_ssize_t j_ = 0; j_ < nc; j_++) {                                                                    \
        UT qb, xb;                                                                                              \
        FT q = Q;                                                                                               \
        memcpy(&qb, &q, sizeof qb);                                                                             \
        memcpy(&xb, &xs[j_], sizeof xb);                                                                        \
        UT keep = -(UT)(tb[j_] < h) | all;                                                                      \
        UT ob = (qb & keep) | (xb & SIGN & ~keep); /* q or ±0 (sign of x) */                                    \
        memcpy(&o[j_], &ob, sizeof ob);                                                                         \
        bad |= (UT)((xb & EXPO) == EXPO); /* any x with an all-ones exponent (NaN or ±inf), in the same pass */ \
    }

__attribute__((target_clones("avx2", "default")))
static uint64_t select_f64(const double *restrict xs, double *restrict o, const uint8_t *restrict tb,
                           Py_ssize_t nc, double d, double r, uint8_t h, uint64_t all) {
#define UT uint64_t
#define FT double
#define SIGN 0x8000000000000000ull
#define EXPO 0x7ff0000000000000ull
    uint64_t bad = 0;
    if (r != 0.0) {
        SELECT_BODY(xs[j_] * r)
    } else {
        SELECT_BODY(xs[j_] / d)
    }
    return bad;
#undef UT
#undef FT
#undef SIGN
#undef EXPO
}

__attribute__((target_clones("avx2", "default")))
static uint32_t select_f32(const float *restrict xs, float *restrict o, const uint8_t *restrict tb,
                           Py_ssize_t nc, double d, double r, uint8_t h, uint32_t all) {
#define UT uint32_t
#define FT float
#define SIGN 0x80000000u
#define EXPO 0x7f800000u
    uint32_t bad = 0;
    if (r != 0.0) {
        const float rf = (float)r; /* r is a float32 (masks._exact_reciprocal) */
        SELECT_BODY(xs[j_] * rf)
    } else {
        SELECT_BODY((float)((double)xs[j_] / d))
    }
    return bad;
#undef UT
#undef FT
#undef SIGN
#undef EXPO
}
#undef SELECT_BODY

#if FM_AVX2
/* select_f32 and select_f64 written out for AVX2 (used where the CPU has it, checked at import)
 * when multiplying: the same operations unit by unit (product, the keep mask from a signed
 * compare of the bytes with their top bits flipped, ±0 with x's sign otherwise), so the same
 * bits, in about 0.12 instead of 0.27 ns a float32 unit in cache (the compiler's own AVX2 clone
 * widens the bytes of the mask clumsily). Dividing, the division (0.5 ns a unit) is the bound
 * and the compiler's loop is as fast in cache and faster on a stream (float32: 12.5 against
 * 16 ms for 10^7 units), so that is used. */
__attribute__((target("avx2")))
static uint32_t select_f32_avx2(const float *restrict xs, float *restrict o, const uint8_t *restrict tb,
                        Py_ssize_t nc, double d, double r, uint8_t h, uint32_t all) {
    if (r == 0.0) return select_f32(xs, o, tb, nc, d, r, h, all); /* dividing: the compiler's loop streams faster */
    const __m256 rf = _mm256_set1_ps((float)r);
    const __m256d dd = _mm256_set1_pd(d);
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u), absm = _mm256_set1_epi32(0x7fffffff);
    const __m256i flip = _mm256_set1_epi8((char)0x80), hh = _mm256_set1_epi8((char)(h ^ 0x80));
    const __m256i allm = _mm256_set1_epi8((char)(all ? 0xff : 0));
    __m256i highest = _mm256_setzero_si256();
    Py_ssize_t j = 0;
    for (; j + 32 <= nc; j += 32) {
        __m256i k = _mm256_or_si256(_mm256_cmpgt_epi8(hh, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(tb + j)), flip)), allm);
        __m128i k0 = _mm256_castsi256_si128(k), k1 = _mm256_extracti128_si256(k, 1);
        __m128i ks[4] = {k0, _mm_srli_si128(k0, 8), k1, _mm_srli_si128(k1, 8)};
        for (int s = 0; s < 4; s++) {
            __m256i km = _mm256_cvtepi8_epi32(ks[s]);
            __m256 xv = _mm256_loadu_ps(xs + j + 8 * s);
            __m256i xb = _mm256_castps_si256(xv);
            highest = _mm256_max_epu32(highest, _mm256_and_si256(xb, absm));
            __m256 q;
            if (r != 0.0) q = _mm256_mul_ps(xv, rf);
            else q = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xv)), dd))),
                                          _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1)), dd)), 1);
            _mm256_storeu_si256((__m256i *)(o + j + 8 * s), _mm256_blendv_epi8(_mm256_and_si256(xb, sign), _mm256_castps_si256(q), km));
        }
    }
    uint32_t hi_[8], top = 0;
    _mm256_storeu_si256((__m256i *)hi_, highest);
    for (int s = 0; s < 8; s++) top = hi_[s] > top ? hi_[s] : top;
    return (top >= 0x7f800000u) | select_f32(xs + j, o + j, tb + j, nc - j, d, r, h, all);
}
__attribute__((target("avx2")))
static uint64_t select_f64_avx2(const double *restrict xs, double *restrict o, const uint8_t *restrict tb,
                        Py_ssize_t nc, double d, double r, uint8_t h, uint64_t all) {
    if (r == 0.0) return select_f64(xs, o, tb, nc, d, r, h, all); /* dividing: the division is the bound */
    const __m256d rr = _mm256_set1_pd(r), dd = _mm256_set1_pd(d);
    const __m256i sign = _mm256_set1_epi64x((long long)0x8000000000000000ull), expo = _mm256_set1_epi64x(0x7ff0000000000000ll);
    const __m128i flip = _mm_set1_epi8((char)0x80), hh = _mm_set1_epi8((char)(h ^ 0x80)), allm = _mm_set1_epi8((char)(all ? 0xff : 0));
    __m256i bad = _mm256_setzero_si256();
    Py_ssize_t j = 0;
    for (; j + 16 <= nc; j += 16) {
        __m128i k = _mm_or_si128(_mm_cmpgt_epi8(hh, _mm_xor_si128(_mm_loadu_si128((const __m128i *)(tb + j)), flip)), allm);
        __m128i ks[4] = {k, _mm_srli_si128(k, 4), _mm_srli_si128(k, 8), _mm_srli_si128(k, 12)};
        for (int s = 0; s < 4; s++) {
            __m256i km = _mm256_cvtepi8_epi64(ks[s]);
            __m256d xv = _mm256_loadu_pd(xs + j + 4 * s);
            __m256i xb = _mm256_castpd_si256(xv);
            __m256d q = r != 0.0 ? _mm256_mul_pd(xv, rr) : _mm256_div_pd(xv, dd);
            bad = _mm256_or_si256(bad, _mm256_cmpeq_epi64(_mm256_and_si256(xb, expo), expo));
            _mm256_storeu_si256((__m256i *)(o + j + 4 * s), _mm256_blendv_epi8(_mm256_and_si256(xb, sign), _mm256_castpd_si256(q), km));
        }
    }
    return (uint64_t)!_mm256_testz_si256(bad, bad) | select_f64(xs + j, o + j, tb + j, nc - j, d, r, h, all);
}
#endif

/* ---- one pass over the chunks, on one or more threads ---------------------------------------- */

#define MAX_THREADS 256

typedef struct {
    /* geometry: masks._chunks */
    Py_ssize_t rows, cols, chunk, pieces, per, nchunks, maxcount; /* maxcount: units of the largest chunk */
    int wide; /* cols >= chunk: every row in pieces of `chunk` columns; else groups of `per` rows */
    /* decision and rescaling */
    int hi, tie_bits;
    uint32_t lo;
    double d, r; /* the divisor; r: 0, or a reciprocal that gives the quotient's bits (select_f64) */
    int single;
    const char *x;
    char *out;
    gen_t gen; /* used by the worker whose turn it is only */
    /* scheduling through a capsule (worker): chunks taken in turn */
    Py_ssize_t next_chunk; /* the next chunk a worker takes */
    Py_ssize_t turn;       /* the chunk whose bits may be drawn now */
    /* scheduling with the PCG64 state (scan_worker): the generator at chunk k's start, once have[k] */
    gen_t *at;
    char *have;
    int stop;              /* a non-finite x (or no memory): everyone stops */
    int nomem;
#if FM_THREADS
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
} job_t;

#if FM_THREADS
#define LOCK(j) pthread_mutex_lock(&(j)->mu)
#define UNLOCK(j) pthread_mutex_unlock(&(j)->mu)
#define WAIT(j) pthread_cond_wait(&(j)->cv, &(j)->mu)
#define WAKE(j) pthread_cond_broadcast(&(j)->cv)
#else
#define LOCK(j) ((void)0)
#define UNLOCK(j) ((void)0)
#define WAIT(j) ((void)0)
#define WAKE(j) ((void)0)
#endif

/* Chunk k: first row, number of rows, first column, width (masks._chunks, row-major). */
static void chunk_geometry(const job_t *j, Py_ssize_t k, Py_ssize_t *r0, Py_ssize_t *nr, Py_ssize_t *c0,
                           Py_ssize_t *w) {
    if (j->wide) {
        *r0 = k / j->pieces;
        *nr = 1;
        *c0 = (k % j->pieces) * j->chunk;
        *w = j->cols - *c0 < j->chunk ? j->cols - *c0 : j->chunk;
    } else {
        *r0 = k * j->per;
        *nr = j->rows - *r0 < j->per ? j->rows - *r0 : j->per;
        *c0 = 0;
        *w = j->cols;
    }
}

/* Draw a chunk's bits in stream order: its words, then one tie draw per tied unit (top byte
 * == hi). Leaves in `kept` the positions of the tied units that their remaining bits keep and
 * returns how many. */
static Py_ssize_t draw_chunk_from(const job_t *j, gen_t *g, Py_ssize_t count, uint64_t *restrict words,
                                  uint32_t *restrict kept) {
    gen_words(g, words, (count + 7) / 8);
    if (j->tie_bits == 0 || j->hi > 255) return 0; /* no ties to resolve */
    const Py_ssize_t nt = find_ties((const uint8_t *)words, count, (uint8_t)j->hi, kept);
    const int shift = 32 - j->tie_bits;
    const uint32_t lo = j->lo;
    Py_ssize_t nk = 0;
    for (Py_ssize_t t = 0; t < nt; t++)
        if ((gen_u32(g) >> shift) < lo) kept[nk++] = kept[t];
    return nk;
}

static Py_ssize_t draw_chunk(job_t *j, Py_ssize_t count, uint64_t *restrict words, uint32_t *restrict kept) {
    return draw_chunk_from(j, &j->gen, count, words, kept);
}

/* Compare, rescale, store chunk k from its words (nk kept ties in `kept`); returns nonzero if
 * it saw a non-finite x. */
static int apply_chunk(const job_t *j, Py_ssize_t k, const uint64_t *words, const uint32_t *kept, Py_ssize_t nk) {
    Py_ssize_t r0, nr, c0, w;
    chunk_geometry(j, k, &r0, &nr, &c0, &w);
    const Py_ssize_t off = r0 * j->cols + c0;
    const uint8_t *top = (const uint8_t *)words;
    const double d = j->d;
    const uint8_t h = j->hi > 255 ? 255 : (uint8_t)j->hi;
    const int all = j->hi > 255;
    uint64_t bad = 0;
    if (j->single) {
        const float *x = (const float *)j->x + c0;
        float *o = (float *)j->out + off;
        for (Py_ssize_t r = 0; r < nr; r++)
#if FM_AVX2
            if (fm_avx2)
                bad |= select_f32_avx2(x, o + r * w, top + r * w, w, d, j->r, h, all ? 0xffffffffu : 0u);
            else
#endif
                bad |= select_f32(x, o + r * w, top + r * w, w, d, j->r, h, all ? 0xffffffffu : 0u);
        for (Py_ssize_t t = 0; t < nk; t++) o[kept[t]] = (float)((double)x[nr > 1 ? kept[t] % w : kept[t]] / d);
    } else {
        const double *x = (const double *)j->x + c0;
        double *o = (double *)j->out + off;
        for (Py_ssize_t r = 0; r < nr; r++)
#if FM_AVX2
            if (fm_avx2)
                bad |= select_f64_avx2(x, o + r * w, top + r * w, w, d, j->r, h, all ? ~0ull : 0ull);
            else
#endif
                bad |= select_f64(x, o + r * w, top + r * w, w, d, j->r, h, all ? ~0ull : 0ull);
        for (Py_ssize_t t = 0; t < nk; t++) o[kept[t]] = x[nr > 1 ? kept[t] % w : kept[t]] / d;
    }
    return bad != 0;
}

/* A worker takes the next chunk, waits for its turn, draws all of the chunk's bits, passes the
 * turn on, then selects (the memory-bound part, in parallel with the other workers). */
/* A thread's scratch for one chunk: its random words and its tie positions (touched at ties
 * only). Both NULL, with the job stopped for want of memory and its waiters woken, on failure. */
static int alloc_scratch(job_t *j, uint64_t **words, uint32_t **kept) {
    *words = (uint64_t *)malloc((size_t)((j->maxcount + 7) / 8) * sizeof(uint64_t));
    *kept = (uint32_t *)malloc((size_t)j->maxcount * sizeof(uint32_t));
    if (*words != NULL && *kept != NULL) return 1;
    free(*words);
    free(*kept);
    *words = NULL;
    *kept = NULL;
    LOCK(j);
    j->nomem = j->stop = 1;
    WAKE(j);
    UNLOCK(j);
    return 0;
}

static void *worker(void *arg) {
    job_t *j = (job_t *)arg;
    uint64_t *words;
    uint32_t *kept;
    if (!alloc_scratch(j, &words, &kept)) return NULL;
    for (;;) {
        LOCK(j);
        if (j->stop || j->next_chunk >= j->nchunks) {
            UNLOCK(j);
            break;
        }
        Py_ssize_t k = j->next_chunk++;
        while (j->turn != k && !j->stop) WAIT(j);
        int stop = j->stop;
        UNLOCK(j);
        if (stop) break;
        Py_ssize_t r0, nr, c0, w;
        chunk_geometry(j, k, &r0, &nr, &c0, &w);
        Py_ssize_t nk = draw_chunk(j, nr * w, words, kept);
        LOCK(j);
        j->turn = k + 1;
        WAKE(j);
        UNLOCK(j);
        if (apply_chunk(j, k, words, kept, nk)) {
            LOCK(j);
            j->stop = 1; /* a non-finite x: the caller puts the generator back */
            WAKE(j);
            UNLOCK(j);
            break;
        }
    }
    free(words);
    free(kept);
    return NULL;
}

/* Count the units of `count` top bytes equal to h. */
static Py_ssize_t count_ties(const uint8_t *restrict top, Py_ssize_t count, uint8_t h) {
    Py_ssize_t n = 0, u = 0;
#if defined(__SSE2__)
    const __m128i hh = _mm_set1_epi8((char)h);
    for (; u + 64 <= count; u += 64) {
        const __m128i *p = (const __m128i *)(top + u);
        __m128i e0 = _mm_cmpeq_epi8(_mm_loadu_si128(p), hh), e1 = _mm_cmpeq_epi8(_mm_loadu_si128(p + 1), hh);
        __m128i e2 = _mm_cmpeq_epi8(_mm_loadu_si128(p + 2), hh), e3 = _mm_cmpeq_epi8(_mm_loadu_si128(p + 3), hh);
        if (!_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(e0, e1), _mm_or_si128(e2, e3)))) continue;
        n += __builtin_popcount((unsigned)_mm_movemask_epi8(e0)) + __builtin_popcount((unsigned)_mm_movemask_epi8(e1)) +
             __builtin_popcount((unsigned)_mm_movemask_epi8(e2)) + __builtin_popcount((unsigned)_mm_movemask_epi8(e3));
    }
#endif
    for (; u < count; u++) n += top[u] == h;
    return n;
}

/* Move `g` over chunk k's draws without using them: its words, then one tie draw per unit
 * whose top byte is hi (only how many matters). */
static void skip_chunk(const job_t *j, gen_t *g, Py_ssize_t k, uint64_t *restrict words) {
    Py_ssize_t r0, nr, c0, w;
    chunk_geometry(j, k, &r0, &nr, &c0, &w);
    const Py_ssize_t count = nr * w;
    gen_words(g, words, (count + 7) / 8);
    if (j->tie_bits == 0 || j->hi > 255) return;
    for (Py_ssize_t t = count_ties((const uint8_t *)words, count, (uint8_t)j->hi); t > 0; t--) (void)gen_u32(g);
}

/* The PCG64 run here: workers take runs of GROUP consecutive chunks from a shared counter, in
 * increasing order, and never wait for each other. A worker finds its generator at its run's
 * first chunk from the latest start published before it (the state after some chunk's draws),
 * skipping over the chunks in between itself (words and how many ties: about a tenth of the
 * cost of applying them; usually none, as the run before was drawn, and its end published, a
 * moment earlier), then draws and applies its chunks, publishing each chunk's end. The state
 * at a chunk is a function of the generator's start and the chunks before, however it is
 * reached: the draws are those of one thread going through all chunks in order, so the same
 * results and final state (published at the last chunk's end) for any number of threads.
 * Runs of GROUP chunks (2 MiB or more of output) keep a thread's first touches of the fresh
 * output together (two threads faulting in the same huge page both clear one). A thread
 * delayed by the scheduler delays the call by its current run at most. */
static Py_ssize_t group_of(const job_t *j) {
    const Py_ssize_t bytes = j->maxcount * (j->single ? 4 : 8), want = (Py_ssize_t)1 << 21;
    return bytes >= want ? 1 : (want + bytes - 1) / bytes;
}

static void *scan_worker(void *arg) {
    job_t *j = (job_t *)arg;
    uint64_t *words;
    uint32_t *kept;
    if (!alloc_scratch(j, &words, &kept)) return NULL;
    const Py_ssize_t group = group_of(j);
    for (;;) {
        LOCK(j);
        if (j->stop || j->next_chunk >= j->nchunks) {
            UNLOCK(j);
            break;
        }
        const Py_ssize_t k0 = j->next_chunk, k1 = j->nchunks - k0 < group ? j->nchunks : k0 + group;
        j->next_chunk = k1;
        Py_ssize_t known = k0;
        while (!j->have[known]) known--; /* have[0]: the generator's start */
        gen_t g = j->at[known];
        UNLOCK(j);
        for (Py_ssize_t k = known; k < k0; k++) skip_chunk(j, &g, k, words);
        int bad = 0;
        for (Py_ssize_t k = k0; k < k1 && !bad; k++) {
            Py_ssize_t r0, nr, c0, w;
            chunk_geometry(j, k, &r0, &nr, &c0, &w);
            Py_ssize_t nk = draw_chunk_from(j, &g, nr * w, words, kept);
            LOCK(j);
            j->at[k + 1] = g; /* the state after chunk k's draws: chunk k + 1's start */
            j->have[k + 1] = 1;
            UNLOCK(j);
            bad = apply_chunk(j, k, words, kept, nk);
        }
        if (bad) {
            LOCK(j);
            j->stop = 1; /* a non-finite x: the caller puts the generator back */
            UNLOCK(j);
            break;
        }
    }
    free(words);
    free(kept);
    return NULL;
}

/* Round to nearest, subnormals neither flushed nor read as zero (IEEE's default, Python's). */
static int default_fp_env(void) {
#if defined(__SSE2__)
    if ((_mm_getcsr() & 0xe040u) != 0) return 0; /* rounding control, flush-to-zero, denormals-are-zero */
#endif
    return fegetround() == FE_TONEAREST;
}

static PyObject *dropout(PyObject *self, PyObject *args) {
    PyObject *spec;
    Py_buffer x, out;
    Py_ssize_t rows, cols, chunk, threads;
    int hi, tie_bits, single;
    unsigned long lo;
    double divisor, reciprocal;
    job_t j;
    if (!PyArg_ParseTuple(args, "Oy*w*nnnikiddpn", &spec, &x, &out, &rows, &cols, &chunk, &hi, &lo, &tie_bits,
                          &divisor, &reciprocal, &single, &threads))
        return NULL;
    memset(&j, 0, sizeof j);
    const Py_ssize_t width = single ? (Py_ssize_t)sizeof(float) : (Py_ssize_t)sizeof(double);
    const char *err = NULL;
    if (rows < 0 || cols < 1 || chunk < 1 || chunk > 0x7fffffff || hi < 0 || hi > 256 || tie_bits < 0 ||
        tie_bits > 24 || lo >= (1ul << tie_bits))
        err = "dropout: invalid arguments";
    else if (x.len < cols * width || rows > PY_SSIZE_T_MAX / width / cols || out.len < rows * cols * width)
        err = "dropout: buffer too small";
    if (err != NULL || gen_from(spec, &j.gen) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&out);
        if (err != NULL) PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    j.rows = rows;
    j.cols = cols;
    j.chunk = chunk;
    j.wide = cols >= chunk;
    j.pieces = (cols + chunk - 1) / chunk;
    j.per = chunk / cols > 1 ? chunk / cols : 1;
    j.nchunks = j.wide ? rows * j.pieces : (rows + j.per - 1) / j.per;
    j.maxcount = j.wide ? chunk : (rows < j.per ? rows : j.per) * cols;
    if (j.maxcount < 1) j.maxcount = 1;
    j.hi = hi;
    j.lo = (uint32_t)lo;
    j.tie_bits = tie_bits;
    j.d = divisor;
    j.r = default_fp_env() ? reciprocal : 0.0; /* masks._exact_reciprocal's proof assumes it */
    j.single = single;
    j.x = (const char *)x.buf;
    j.out = (char *)out.buf;
    if (threads > j.nchunks) threads = j.nchunks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    const int by_scan = j.gen.bg == NULL; /* the PCG64 run here: scan_worker */
    if (by_scan) {
        j.at = (gen_t *)malloc((size_t)(j.nchunks + 1) * sizeof(gen_t));
        j.have = (char *)calloc((size_t)(j.nchunks + 1), 1);
        if (j.at == NULL || j.have == NULL) {
            free(j.at);
            free(j.have);
            PyBuffer_Release(&x);
            PyBuffer_Release(&out);
            return PyErr_NoMemory();
        }
        j.at[0] = j.gen;
        j.have[0] = 1;
        const Py_ssize_t groups = (j.nchunks + group_of(&j) - 1) / group_of(&j);
        if (threads > groups) threads = groups;
    }
    void *(*work)(void *) = by_scan ? scan_worker : worker;
    Py_BEGIN_ALLOW_THREADS
#if FM_THREADS
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    pthread_t tid[MAX_THREADS];
    Py_ssize_t started = 0;
    for (Py_ssize_t t = 1; t < threads; t++) /* the caller's thread is one of the workers */
        if (pthread_create(&tid[started], NULL, work, &j) == 0) started++;
    work(&j); /* if a thread could not start, the others do its share: same results */
    for (Py_ssize_t t = 0; t < started; t++) pthread_join(tid[t], NULL);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
#else
    work(&j);
#endif
    Py_END_ALLOW_THREADS
    if (by_scan) {
        if (!j.stop) j.gen = j.at[j.nchunks]; /* the final state */
        free(j.at);
        free(j.have);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (j.nomem) return PyErr_NoMemory();
    PyObject *state = gen_state(&j.gen);
    if (state == NULL) return NULL;
    /* stop without nomem: a non-finite x */
    return Py_BuildValue("(NN)", PyBool_FromLong(!j.stop), state);
}

/* The draws the kernel makes, for tests: `n` values of next_uint64 (bits == 64) or of
 * next_uint32 >> (32 - bits) (1 <= bits <= 32), as numpy's integers(0, 2**bits) should give;
 * returns (bytes, generator state as `dropout` returns it). */
static PyObject *draws(PyObject *self, PyObject *args) {
    PyObject *spec;
    Py_ssize_t n;
    int bits;
    gen_t g;
    if (!PyArg_ParseTuple(args, "Oni", &spec, &n, &bits)) return NULL;
    if (n < 0 || bits < 1 || (bits > 32 && bits != 64)) {
        PyErr_SetString(PyExc_ValueError, "draws: n >= 0 and bits in 1..32 or 64");
        return NULL;
    }
    if (gen_from(spec, &g) < 0) return NULL;
    PyObject *res = PyBytes_FromStringAndSize(NULL, n * (bits == 64 ? 8 : 4));
    if (res == NULL) return NULL;
    char *buf = PyBytes_AS_STRING(res);
    if (bits == 64) {
        uint64_t *w = (uint64_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(uint64_t));
        if (w == NULL) {
            Py_DECREF(res);
            return PyErr_NoMemory();
        }
        gen_words(&g, w, n);
        memcpy(buf, w, (size_t)n * 8);
        free(w);
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t v = gen_u32(&g) >> (32 - bits);
            memcpy(buf + 4 * i, &v, 4);
        }
    }
    PyObject *state = gen_state(&g);
    if (state == NULL) {
        Py_DECREF(res);
        return NULL;
    }
    return Py_BuildValue("(NN)", res, state);
}

static PyMethodDef methods[] = {
    {"dropout", dropout, METH_VARARGS,
     "dropout(generator, x, out, rows, cols, chunk, hi, lo, tie_bits, divisor, reciprocal, single, threads)"
     " -> (x finite, PCG64 state or None)"},
    {"draws", draws, METH_VARARGS, "draws(generator, n, bits) -> (bytes, PCG64 state or None): the kernel's draws"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastmask", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastmask(void) {
#if FM_AVX2
    __builtin_cpu_init();
    fm_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    const char *env = getenv("STATS_DROPOUT_NO_AVX2"); /* tests: the portable loops give the same bits */
    if (env != NULL && env[0] != '\0' && env[0] != '0') fm_avx2 = 0;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "PCG64_STATE", FM_PCG64) < 0 ||
                      PyModule_AddIntConstant(m, "AVX2", fm_avx2) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
