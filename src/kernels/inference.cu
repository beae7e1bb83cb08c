// Our CUDA kernels for the forward pass. Scale, mask and softmax of attention scores in one pass:
// the CUDA side of `ScaledMaskedSoftmax` in src/model/ops.rs (whose CPU side is the reference;
// training uses it too, with the backward in training.cu).
//
// `src` holds `rows` contiguous rows of `seq_k` scores (row r is query position
// r % seq_q of batch entry r / rows_per_batch). Row r sees the keys [begin, end):
//   end   = causal ? min(r % seq_q + offset + 1, seq_k) : seq_k   (offset = seq_k - seq_q)
//   begin = left_pad ? min(left_pad[r / rows_per_batch], end) : 0  (left padding of a batch)
// and gets softmax(scale * score) there, 0 elsewhere. Maxima, exponentials and sums are
// computed in f32 whatever the storage type, as torch's softmax(dtype=float32) does.
#include "common.cuh"

template <typename T>
__device__ void scaled_masked_softmax(const T *src, T *dst, const uint32_t *left_pad,
                                      uint32_t seq_k, uint32_t seq_q, uint32_t rows_per_batch,
                                      uint32_t causal, float scale) {
    __shared__ float shared[32];
    const size_t row = blockIdx.x;
    const T *s = src + row * seq_k;
    T *d = dst + row * seq_k;
    const uint32_t offset = seq_k > seq_q ? seq_k - seq_q : 0;
    uint32_t end = seq_k;
    if (causal) end = min((uint32_t)(row % seq_q) + offset + 1, seq_k);
    uint32_t begin = left_pad ? min(left_pad[row / rows_per_batch], end) : 0;

    float m = -INFINITY;
    for (uint32_t j = begin + threadIdx.x; j < end; j += blockDim.x) m = fmaxf(m, to_f32(s[j]));
    m = block_reduce<true>(m, shared) * scale;
    float sum = 0.0f;
    for (uint32_t j = begin + threadIdx.x; j < end; j += blockDim.x) sum += expf(to_f32(s[j]) * scale - m);
    sum = block_reduce<false>(sum, shared);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (uint32_t j = threadIdx.x; j < seq_k; j += blockDim.x) {
        float v = (j >= begin && j < end) ? expf(to_f32(s[j]) * scale - m) * inv : 0.0f;
        d[j] = from_f32<T>(v);
    }
}

#define SOFTMAX_KERNEL(NAME, T)                                                               \
    extern "C" __global__ void NAME(const T *src, T *dst, const uint32_t *left_pad,           \
                                    uint32_t seq_k, uint32_t seq_q, uint32_t rows_per_batch,  \
                                    uint32_t causal, float scale) {                           \
        scaled_masked_softmax<T>(src, dst, left_pad, seq_k, seq_q, rows_per_batch, causal,    \
                                 scale);                                                      \
    }

SOFTMAX_KERNEL(scaled_masked_softmax_f32, float)
SOFTMAX_KERNEL(scaled_masked_softmax_bf16, __nv_bfloat16)
SOFTMAX_KERNEL(scaled_masked_softmax_f16, __half)

// RMSNorm as transformers' Qwen3 RMSNorm computes it for 16-bit input: x in f32,
// normalised by 1/sqrt(mean(x^2) + eps), rounded to the input type, then multiplied by the
// weight (a 16-bit product, i.e. computed in f32 and rounded). The CUDA side of
// `RmsNormRounded` in src/model/ops.rs. One block per row of `d` values.
template <typename T>
__device__ void rms_norm_rounded(const T *x, const T *w, T *y, uint32_t d, float eps) {
    __shared__ float shared[32];
    const size_t row = blockIdx.x;
    const T *xs = x + row * d;
    T *ys = y + row * d;
    float ss = 0.0f;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = to_f32(xs[j]);
        ss += v * v;
    }
    ss = block_reduce<false>(ss, shared);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float normed = to_f32(from_f32<T>(to_f32(xs[j]) * r));
        ys[j] = from_f32<T>(normed * to_f32(w[j]));
    }
}

#define RMS_NORM_KERNEL(NAME, T)                                                              \
    extern "C" __global__ void NAME(const T *x, const T *w, T *y, uint32_t d, float eps) {    \
        rms_norm_rounded<T>(x, w, y, d, eps);                                                 \
    }

RMS_NORM_KERNEL(rms_norm_rounded_bf16, __nv_bfloat16)
RMS_NORM_KERNEL(rms_norm_rounded_f16, __half)
