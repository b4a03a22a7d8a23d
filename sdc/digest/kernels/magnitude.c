/* The largest magnitude in a set of float arrays on the CPU, in one call.
 *
 * For the sentinel's every-step probe of the reduced gradients (sdc/sentinel/flags.py): it
 * runs right after the backward pass, when the caches hold the step's tensors and not the
 * interpreter's code, and there each torch operation from Python (a view per gradient, a
 * concatenation, a norm, a read) cost several times what it does warm: ~180 us a step on a
 * 2-core VM for 6 gradients. Here the probe is one call over their addresses, made through
 * the C API (``sdc.digest._native.max_magnitude``): through ctypes the call, kernel
 * included, took ~37 us there; the C API made the probe's hook 25-35 us faster.
 *
 * Magnitudes are compared as the bits of |x|: for IEEE floats with the sign bit cleared the
 * integer order is the order of the values, +inf above every finite value and every NaN above
 * +inf. So one integer max (which compilers vectorize; a float max with NaN semantics they do
 * not) gives the largest magnitude, NaN if any element is NaN, +inf if any is infinite.
 *
 * dtype: 0 float32, 1 float64, 2 bfloat16, 3 float16. A NULL array is skipped (a parameter
 * without a gradient this step). Returns the magnitude as a double (NaN, inf, or finite).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint32_t max_bits32(const uint32_t* p, int64_t n) {
    uint32_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        uint32_t b = p[j] & 0x7fffffffu;
        m = b > m ? b : m;
    }
    return m;
}

static uint64_t max_bits64(const uint64_t* p, int64_t n) {
    uint64_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        uint64_t b = p[j] & 0x7fffffffffffffffull;
        m = b > m ? b : m;
    }
    return m;
}

static uint16_t max_bits16(const uint16_t* p, int64_t n) {
    uint16_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        uint16_t b = (uint16_t)(p[j] & 0x7fffu);
        m = b > m ? b : m;
    }
    return m;
}

static double f32_value(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return (double)f;
}

static double f16_value(uint16_t h) {
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    if (exponent == 0x1f) return f32_value(0x7f800000u | (mantissa << 13)); /* inf, or NaN */
    if (exponent == 0) return (double)mantissa * 5.9604644775390625e-8;     /* zero, subnormal: m x 2^-24 */
    return f32_value(((exponent + 112) << 23) | (mantissa << 13));
}

double sdc_max_magnitude(const void* const* arrays, const int64_t* counts, int64_t n, int dtype) {
    uint64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (arrays[i] == NULL) continue;
        uint64_t b;
        switch (dtype) {
            case 0: b = max_bits32((const uint32_t*)arrays[i], counts[i]); break;
            case 1: b = max_bits64((const uint64_t*)arrays[i], counts[i]); break;
            default: b = max_bits16((const uint16_t*)arrays[i], counts[i]); break;
        }
        m = b > m ? b : m;
    }
    switch (dtype) {
        case 0: return f32_value((uint32_t)m);
        case 1: { double d; memcpy(&d, &m, sizeof d); return d; }
        case 2: return f32_value((uint32_t)m << 16);
        default: return f16_value((uint16_t)m);
    }
}

/* max_magnitude(addresses, counts, dtype) -> float, from Python: ``addresses`` a list of ints
 * (0: absent), ``counts`` a tuple of ints as long, ``dtype`` as above. The GIL stays held:
 * the arrays are a few pages, read in microseconds. */
#define SDC_MAX_ARRAYS 256

PyObject* sdc_py_max_magnitude(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyList_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "max_magnitude(addresses: list, counts: tuple, dtype: int)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    if (n != PyTuple_GET_SIZE(args[1]) || n > SDC_MAX_ARRAYS) {
        PyErr_SetString(PyExc_ValueError, "max_magnitude: as many counts as addresses, at most 256");
        return NULL;
    }
    int dtype = (int)PyLong_AsLong(args[2]);
    if (dtype < 0 || dtype > 3) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "max_magnitude: dtype 0-3");
        return NULL;
    }
    const void* arrays[SDC_MAX_ARRAYS];
    int64_t counts[SDC_MAX_ARRAYS];
    for (Py_ssize_t i = 0; i < n; i++) {
        arrays[i] = PyLong_AsVoidPtr(PyList_GET_ITEM(args[0], i));
        counts[i] = (int64_t)PyLong_AsLongLong(PyTuple_GET_ITEM(args[1], i));
        if (PyErr_Occurred()) return NULL;
    }
    return PyFloat_FromDouble(sdc_max_magnitude(arrays, counts, (int64_t)n, dtype));
}
