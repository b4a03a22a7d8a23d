/* The largest magnitude in a set of float arrays on the CPU, in one call.
 *
 * For the sentinel's every-step probe of the reduced gradients (sdc/sentinel/flags.py): it
 * runs right after the backward pass, when the caches hold the step's tensors and not the
 * interpreter's code, and there each torch operation from Python (a view per gradient, a
 * concatenation, a norm, a read) cost several times what it does warm: ~180 us a step on a
 * 2-core VM for 6 gradients. Here the probe is one ctypes call over their addresses.
 *
 * Returns NaN if any element is NaN, +inf if any is infinite and none NaN, else the largest
 * |x|. dtype: 0 float32, 1 float64, 2 bfloat16, 3 float16. A NULL array is skipped (a
 * parameter without a gradient this step).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float f16_to_float(uint16_t h) {
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, bits;
    if (exponent == 0x1f) {
        bits = 0x7f800000u | (mantissa << 13); /* inf, or NaN with its payload */
    } else if (exponent == 0) {
        return (float)mantissa * 5.9604644775390625e-8f; /* zero or subnormal: mantissa x 2^-24 */
    } else {
        bits = ((exponent + 112) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f; /* the sign is dropped: only the magnitude is asked for */
}

double sdc_max_magnitude(const void* const* arrays, const int64_t* counts, int64_t n, int dtype) {
    double largest = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const void* base = arrays[i];
        int64_t count = counts[i];
        if (base == NULL) continue;
        for (int64_t j = 0; j < count; j++) {
            double a;
            switch (dtype) {
                case 0: a = fabs((double)((const float*)base)[j]); break;
                case 1: a = fabs(((const double*)base)[j]); break;
                case 2: a = fabs((double)bf16_to_float(((const uint16_t*)base)[j])); break;
                default: a = fabs((double)f16_to_float(((const uint16_t*)base)[j])); break;
            }
            if (a != a) return a; /* NaN: nothing larger to find */
            if (a > largest) largest = a;
        }
    }
    return largest;
}
