// Our CUDA kernels for training: the backward passes of `ScaledMaskedSoftmax` and both
// directions of `RmsNormTrack` (src/model/ops.rs, whose CPU sides are the reference). Every
// kernel runs one block per row of `d` contiguous values and computes in f32.
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
