// Our CUDA kernels for training (and some of the forward pass): the backward of
// `ScaledMaskedSoftmax`, both directions of `RmsNormTrack`, `Rope`, `SwiGlu` and `GeluTanh` (src/model/ops.rs)
// and of `CrossEntropy` (src/train/loss.rs),
// whose CPU sides are the reference. Row kernels run one block per row of `d` contiguous
// values; element-wise ones are grid-stride loops. All compute in f32.
#include "common.cuh"

// Softmax backward with the scale of the forward pass folded in: from the probabilities y
// and their gradient dy, dx = scale * y * (dy - sum_j y_j dy_j). Masked keys have y = 0 and
// so get no gradient.
template <typename T>
__device__ void softmax_backward(const T *y, const T *dy, T *dx, uint32_t d, float scale) {
    __shared__ float shared[32];
    const size_t row = blockIdx.x;
    const T *ys = y + row * d;
    const T *gs = dy + row * d;
    T *out = dx + row * d;
    float dot = 0.0f;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) dot += to_f32(ys[j]) * to_f32(gs[j]);
    dot = block_reduce<false>(dot, shared);
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        out[j] = from_f32<T>(scale * to_f32(ys[j]) * (to_f32(gs[j]) - dot));
    }
}

#define SOFTMAX_BACKWARD_KERNEL(NAME, T)                                                      \
    extern "C" __global__ void NAME(const T *y, const T *dy, T *dx, uint32_t d, float scale) { \
        softmax_backward<T>(y, dy, dx, d, scale);                                             \
    }

SOFTMAX_BACKWARD_KERNEL(softmax_backward_f32, float)
SOFTMAX_BACKWARD_KERNEL(softmax_backward_bf16, __nv_bfloat16)
SOFTMAX_BACKWARD_KERNEL(softmax_backward_f16, __half)

// 1/sqrt(mean(x^2) + eps) of one row, the same in every thread of the block.
__device__ float inv_rms(const float *xs, uint32_t d, float eps, float *shared) {
    float ss = 0.0f;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) ss += xs[j] * xs[j];
    ss = block_reduce<false>(ss, shared);
    return 1.0f / sqrtf(ss / (float)d + eps);
}

// f32 RMSNorm, forward: y = x * r * w with r = 1/sqrt(mean(x^2) + eps).
extern "C" __global__ void rms_norm_track_f32(const float *x, const float *w, float *y,
                                              uint32_t d, float eps) {
    __shared__ float shared[32];
    const size_t row = blockIdx.x;
    const float *xs = x + row * d;
    float *ys = y + row * d;
    const float r = inv_rms(xs, d, eps, shared);
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) ys[j] = xs[j] * r * w[j];
}

// f32 RMSNorm, backward for incoming gradient g: dx = r*(w*g) - r^3/d * x * sum(w*g*x), and
// per row the terms g*x*r of dw (the caller sums them over rows). `out` holds dx in its first
// rows*d values and those terms in the next rows*d.
extern "C" __global__ void rms_norm_track_backward_f32(const float *x, const float *w,
                                                       const float *g, float *out,
                                                       uint32_t rows, uint32_t d, float eps) {
    __shared__ float shared[32];
    const size_t row = blockIdx.x;
    const float *xs = x + row * d;
    const float *gs = g + row * d;
    float *dx = out + row * d;
    float *dw_terms = out + ((size_t)rows + row) * d;
    const float r = inv_rms(xs, d, eps, shared);
    float dot = 0.0f;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) dot += w[j] * gs[j] * xs[j];
    dot = block_reduce<false>(dot, shared);
    const float c = r * r * r * dot / (float)d;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        dx[j] = r * w[j] * gs[j] - c * xs[j];
        dw_terms[j] = gs[j] * xs[j] * r;
    }
}

// Rotary embedding (non-interleaved halves) of x, rows of d = 2h values, row r at position
// (r / heads) % seq, with cos/sin tables of h values per position:
//   y[i] = x[i] c[i] - x[i+h] s[i],   y[i+h] = x[i+h] c[i] + x[i] s[i]   (i < h).
// Its backward is the same map of the gradient with -sin (rope_backward below), since the
// tables repeat over both halves. One thread per pair, grid-stride.
template <typename T>
__device__ void rope(const T *x, const T *cos, const T *sin, T *y, size_t rows, uint32_t heads,
                     uint32_t seq, uint32_t d, float sign) {
    const uint32_t h = d / 2;
    const size_t pairs = rows * h;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < pairs;
         idx += (size_t)blockDim.x * gridDim.x) {
        const size_t r = idx / h;
        const uint32_t i = idx % h;
        const size_t t = (r / heads) % seq;
        const float c = to_f32(cos[t * h + i]), s = sign * to_f32(sin[t * h + i]);
        const float a = to_f32(x[r * d + i]), b = to_f32(x[r * d + i + h]);
        // Each product rounded to T, then the sum (transformers' ops in T; no fused
        // multiply-add, so f32 gives the CPU's bits).
        y[r * d + i] = from_f32<T>(__fsub_rn(round_to<T>(__fmul_rn(a, c)), round_to<T>(__fmul_rn(b, s))));
        y[r * d + i + h] = from_f32<T>(__fadd_rn(round_to<T>(__fmul_rn(b, c)), round_to<T>(__fmul_rn(a, s))));
    }
}

#define ROPE_KERNEL(NAME, T)                                                                  \
    extern "C" __global__ void NAME(const T *x, const T *cos, const T *sin, T *y, size_t rows, \
                                    uint32_t heads, uint32_t seq, uint32_t d, float sign) {   \
        rope<T>(x, cos, sin, y, rows, heads, seq, d, sign);                                   \
    }

ROPE_KERNEL(rope_f32, float)
ROPE_KERNEL(rope_bf16, __nv_bfloat16)
ROPE_KERNEL(rope_f16, __half)

// SwiGLU, y = silu(g) * u with silu(g) = g / (1 + exp(-g)) rounded to T first (as torch's
// act_fn(gate) * up rounds it). Grid-stride over n elements.
template <typename T>
__device__ void swiglu(const T *g, const T *u, T *y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)blockDim.x * gridDim.x) {
        const float gv = to_f32(g[i]);
        const float act = round_to<T>(gv / (1.0f + expf(-gv)));
        y[i] = from_f32<T>(act * to_f32(u[i]));
    }
}

// Its backward for incoming gradient dy, with torch's roundings: a = dy*u (rounded),
// dg = a * s * (1 + g*(1 - s)) with s = sigmoid(g), du = dy * silu(g) (silu rounded).
// `out` holds dg in its first n values and du in the next n.
template <typename T>
__device__ void swiglu_backward(const T *g, const T *u, const T *dy, T *out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)blockDim.x * gridDim.x) {
        const float gv = to_f32(g[i]), d = to_f32(dy[i]);
        const float s = 1.0f / (1.0f + expf(-gv));
        const float act = round_to<T>(gv / (1.0f + expf(-gv)));
        const float a = round_to<T>(d * to_f32(u[i]));
        out[i] = from_f32<T>(a * s * (1.0f + gv * (1.0f - s)));
        out[n + i] = from_f32<T>(d * act);
    }
}

#define SWIGLU_KERNELS(SUFFIX, T)                                                             \
    extern "C" __global__ void swiglu_##SUFFIX(const T *g, const T *u, T *y, size_t n) {      \
        swiglu<T>(g, u, y, n);                                                                \
    }                                                                                         \
    extern "C" __global__ void swiglu_backward_##SUFFIX(const T *g, const T *u, const T *dy,  \
                                                        T *out, size_t n) {                   \
        swiglu_backward<T>(g, u, dy, out, n);                                                 \
    }

SWIGLU_KERNELS(f32, float)
SWIGLU_KERNELS(bf16, __nv_bfloat16)
SWIGLU_KERNELS(f16, __half)

// Cross-entropy of rows of `v` logits against one label per row, computed in f32:
// loss = log(sum_j exp(x_j - m)) - (x_label - m) with m the row's maximum. The backward
// gives dx_j = g * (softmax_j - [j == label]) with g the row's incoming gradient.
template <typename T>
__device__ float row_max_lse(const T *xs, uint32_t v, float *shared, float *lse) {
    float m = -INFINITY;
    for (uint32_t j = threadIdx.x; j < v; j += blockDim.x) m = fmaxf(m, to_f32(xs[j]));
    m = block_reduce<true>(m, shared);
    float sum = 0.0f;
    for (uint32_t j = threadIdx.x; j < v; j += blockDim.x) sum += expf(to_f32(xs[j]) - m);
    sum = block_reduce<false>(sum, shared);
    *lse = logf(sum);
    return m;
}

template <typename T>
__device__ void cross_entropy(const T *x, const uint32_t *labels, float *loss, uint32_t v) {
    __shared__ float shared[32];
    const size_t row = blockIdx.x;
    const T *xs = x + row * v;
    float lse;
    const float m = row_max_lse(xs, v, shared, &lse);
    if (threadIdx.x == 0) loss[row] = lse - (to_f32(xs[labels[row]]) - m);
}

template <typename T>
__device__ void cross_entropy_backward(const T *x, const uint32_t *labels, const float *g,
                                       T *dx, uint32_t v) {
    __shared__ float shared[32];
    const size_t row = blockIdx.x;
    const T *xs = x + row * v;
    T *out = dx + row * v;
    float lse;
    const float m = row_max_lse(xs, v, shared, &lse);
    const float gr = g[row];
    const uint32_t label = labels[row];
    for (uint32_t j = threadIdx.x; j < v; j += blockDim.x) {
        const float p = expf(to_f32(xs[j]) - m - lse);
        out[j] = from_f32<T>(gr * (p - (j == label ? 1.0f : 0.0f)));
    }
}

#define CROSS_ENTROPY_KERNELS(SUFFIX, T)                                                      \
    extern "C" __global__ void cross_entropy_##SUFFIX(const T *x, const uint32_t *labels,      \
                                                      float *loss, uint32_t v) {              \
        cross_entropy<T>(x, labels, loss, v);                                                 \
    }                                                                                         \
    extern "C" __global__ void cross_entropy_backward_##SUFFIX(                               \
        const T *x, const uint32_t *labels, const float *g, T *dx, uint32_t v) {              \
        cross_entropy_backward<T>(x, labels, g, dx, v);                                       \
    }

CROSS_ENTROPY_KERNELS(f32, float)
CROSS_ENTROPY_KERNELS(bf16, __nv_bfloat16)
CROSS_ENTROPY_KERNELS(f16, __half)

// tanh-GELU as torch computes it (gelu(approximate="tanh")), in f32 and rounded once:
//   y = 0.5 x (1 + tanh(b (x + k x^3))),  b = sqrt(2/pi), k = 0.044715,
// and its backward dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) b (1 + 3 k x^2)), t the tanh.
#define GELU_B 0.7978845608028654f
#define GELU_K 0.044715f

template <typename T>
__device__ void gelu_tanh(const T *x, T *y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)blockDim.x * gridDim.x) {
        const float v = to_f32(x[i]);
        y[i] = from_f32<T>(0.5f * v * (1.0f + tanhf(GELU_B * (v + GELU_K * v * v * v))));
    }
}

template <typename T>
__device__ void gelu_tanh_backward(const T *x, const T *dy, T *dx, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)blockDim.x * gridDim.x) {
        const float v = to_f32(x[i]);
        const float t = tanhf(GELU_B * (v + GELU_K * v * v * v));
        const float d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * GELU_B * (1.0f + 3.0f * GELU_K * v * v);
        dx[i] = from_f32<T>(to_f32(dy[i]) * d);
    }
}

#define GELU_KERNELS(SUFFIX, T)                                                               \
    extern "C" __global__ void gelu_tanh_##SUFFIX(const T *x, T *y, size_t n) {               \
        gelu_tanh<T>(x, y, n);                                                                \
    }                                                                                         \
    extern "C" __global__ void gelu_tanh_backward_##SUFFIX(const T *x, const T *dy, T *dx,    \
                                                           size_t n) {                        \
        gelu_tanh_backward<T>(x, dy, dx, n);                                                  \
    }

GELU_KERNELS(f32, float)
GELU_KERNELS(bf16, __nv_bfloat16)
GELU_KERNELS(f16, __half)
