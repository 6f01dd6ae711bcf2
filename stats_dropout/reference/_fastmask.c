/* One fused pass of unshared Bernoulli dropout: compare, rescale, store.
 *
 * The Python side (stats_dropout/schemes.py) draws the random bytes with numpy's Generator and
 * decides ties itself, so this kernel changes no random stream: it only replaces four numpy
 * passes over a chunk (compare, tie search, divide, mask) by one loop with the same results
 * bit for bit:
 *   top[i] <  hi  -> out[i] = x / divisor   (computed in double, rounded once to out's type)
 *   top[i] >= hi  -> out[i] = copysign(0, x), and i is recorded as a tie when top[i] == hi.
 * x has `cols` elements and is broadcast over `rows` (the draws of one chunk). The same pass
 * reports whether any x is NaN or infinite, so the caller can validate x without a pass of its own.
 * Built as an optional extension: without a compiler the numpy path is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Runtime-dispatched clones: AVX2 where the CPU has it (4 divisions per instruction), SSE2
 * otherwise; never an instruction the CPU lacks. */
__attribute__((target_clones("avx2", "default")))
static uint64_t select_f64(const double *restrict xs, double *restrict o, const uint8_t *restrict tb,
                           Py_ssize_t nc, double d, uint8_t h) {
    uint64_t bad = 0;  /* any x with an all-ones exponent (NaN or ±inf), found in the same pass */
    for (Py_ssize_t j = 0; j < nc; j++) {
        double q = xs[j] / d;
        uint64_t qb, xb;
        memcpy(&qb, &q, 8);
        memcpy(&xb, &xs[j], 8);
        uint64_t keep = -(uint64_t)(tb[j] < h);
        uint64_t ob = (qb & keep) | (xb & 0x8000000000000000ull & ~keep);  /* q or ±0 (sign of x) */
        memcpy(&o[j], &ob, 8);
        bad |= (uint64_t)((xb & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    }
    return bad;
}

__attribute__((target_clones("avx2", "default")))
static uint32_t select_f32(const float *restrict xs, float *restrict o, const uint8_t *restrict tb,
                           Py_ssize_t nc, double d, uint8_t h) {
    uint32_t bad = 0;
    for (Py_ssize_t j = 0; j < nc; j++) {
        float q = (float)((double)xs[j] / d);
        uint32_t qb, xb;
        memcpy(&qb, &q, 4);
        memcpy(&xb, &xs[j], 4);
        uint32_t keep = -(uint32_t)(tb[j] < h);
        uint32_t ob = (qb & keep) | (xb & 0x80000000u & ~keep);
        memcpy(&o[j], &ob, 4);
        bad |= (uint32_t)((xb & 0x7f800000u) == 0x7f800000u);
    }
    return bad;
}

static PyObject *masked_divide(PyObject *self, PyObject *args) {
    Py_buffer top, x, out, ties;
    Py_ssize_t rows, cols;
    int hi, single;
    double divisor;
    if (!PyArg_ParseTuple(args, "y*y*w*nnidw*p", &top, &x, &out, &rows, &cols, &hi, &divisor, &ties, &single))
        return NULL;
    Py_ssize_t n = rows * cols, nt = 0;
    size_t width = single ? sizeof(float) : sizeof(double);
    if (top.len < n || x.len < (Py_ssize_t)(cols * width) || out.len < (Py_ssize_t)(n * width) ||
        ties.len < (Py_ssize_t)(n * sizeof(int64_t))) {
        PyBuffer_Release(&top); PyBuffer_Release(&x); PyBuffer_Release(&out); PyBuffer_Release(&ties);
        PyErr_SetString(PyExc_ValueError, "masked_divide: buffer too small");
        return NULL;
    }
    const uint8_t *t = (const uint8_t *)top.buf;
    int64_t *tie = (int64_t *)ties.buf;
    /* Locals the compiler can trust: the parsed ones had their address taken, so stores
     * through `o` might alias them and block vectorisation. */
    const Py_ssize_t nr = rows, nc = cols;
    const double d = divisor;
    const uint8_t h = (uint8_t)hi;
    uint64_t bad = 0;
    Py_BEGIN_ALLOW_THREADS
    /* Branch-free select (vectorised division); ties are listed in a second, byte-only pass
     * (1 in 256 units). */
    for (Py_ssize_t r = 0; r < nr; r++) {
        Py_ssize_t base = r * nc;
        if (single)
            bad |= select_f32((const float *)x.buf, (float *)out.buf + base, t + base, nc, d, h);
        else
            bad |= select_f64((const double *)x.buf, (double *)out.buf + base, t + base, nc, d, h);
    }
    {
        /* Ties, eight bytes at a time: a word has a byte equal to h iff (w ^ h·0x01..01) has a
         * zero byte (the classic "haszero" test); only those words are scanned byte by byte. */
        const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
        const uint64_t pattern = ones * h;
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, t + i, 8);
            uint64_t v = w ^ pattern;
            if ((v - ones) & ~v & highs)
                for (Py_ssize_t k = i; k < i + 8; k++)
                    if (t[k] == h) tie[nt++] = k;
        }
        for (; i < n; i++)
            if (t[i] == h) tie[nt++] = i;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&top); PyBuffer_Release(&x); PyBuffer_Release(&out); PyBuffer_Release(&ties);
    return Py_BuildValue("(ni)", nt, (int)(bad != 0));
}

static PyMethodDef methods[] = {
    {"masked_divide", masked_divide, METH_VARARGS,
     "masked_divide(top, x, out, rows, cols, hi, divisor, ties, single) -> (number of ties, x not finite)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastmask", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastmask(void) { return PyModule_Create(&module); }
