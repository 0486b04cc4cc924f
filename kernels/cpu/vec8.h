/* 8-float vectors for the CPU kernels (GCC's vector extension: a function compiled for
 * x86-64-v3 runs them as AVX2, the baseline as pairs of SSE operations), and the
 * helpers the softmax steps share: select, horizontal max and sum, and a polynomial
 * e^x. All static inline: each kernel's clones get their own copies. */
#ifndef KW_CPU_VEC8_H
#define KW_CPU_VEC8_H

#include <math.h>
#include <stdint.h>

/* always inlined: a call would pass 32-byte vectors by value, whose ABI differs between
 * the baseline and the x86-64-v3 clones (Clang refuses such calls in the baseline) */
#define KW_V8_INLINE __attribute__((always_inline))

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int32_t v8iu __attribute__((vector_size(32), aligned(4)));

static inline KW_V8_INLINE v8 sel8(v8i m, v8 a, v8 b) /* a where m, else b */
{
    return (v8)(((v8i)a & m) | ((v8i)b & ~m));
}

/* e^x of 8 floats: x = k ln 2 + r with |r| <= ln 2 / 2 (ln 2 in two parts), e^r by
 * Cephes' degree-6 polynomial for expf (within 2 ulp of expf), 2^k made in the exponent
 * bits (k <= 127). 0 below -87.3 (e^x is not a normal float there) and for -inf; +inf
 * above 88.3 (softmax steps take it of scores less their maximum, <= 0). In vector
 * types because GCC compiles the scalar form's selects and float-to-int conversion to
 * branches, one float at a time. */
static inline KW_V8_INLINE v8 exp8(v8 x)
{
    const v8 lo = (v8){0} - 87.3f, hi = (v8){0} + 88.3f;
    v8 xc = sel8(x < lo, lo, x);
    xc = sel8(xc > hi, hi, xc);
    v8 k = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f; /* round(x / ln 2) */
    v8 r = xc - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    v8 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.f;
    v8i bits = (__builtin_convertvector(k, v8i) + 127) << 23;
    v8 e = p * (v8)bits;
    e = sel8(x < lo, (v8){0}, e);
    return sel8(x > hi, (v8){0} + INFINITY, e);
}

static inline KW_V8_INLINE float hmax8(v8 x)
{
    float m = x[0];
    for (int i = 1; i < 8; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static inline KW_V8_INLINE float hsum8(v8 x)
{
    return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
}

#endif
