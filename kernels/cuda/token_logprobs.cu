// Token log-probabilities from logits without materialising log-softmax (CUDA twin of
// kernels/src/ops/logprobs.rs). Compiled at run time by NVRTC.
// Launch both kernels with grid = rows, block = a power of two <= 1024 threads.

#define POST_MAX_THREADS 1024

// Merges two (max, scaled sum) pairs of an online log-sum-exp.
__device__ __forceinline__ void post_lse_merge(float& m, float& s, float m2, float s2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) { m = m2; s = s2; return; }
    if (m2 > m) { s = s * expf(m - m2) + s2; m = m2; }
    else { s = s + s2 * expf(m2 - m); }
}

// out[row] = logits[row, targets[row]] - logsumexp(logits[row]): one streaming pass per row.
extern "C" __global__ void post_token_logprobs_fwd(const float* logits, const unsigned int* targets,
                                                   float* out, int rows, int vocab) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* x = logits + (size_t)row * vocab;
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = x[i];
        if (v > m) { s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f; m = v; }
        else { s += expf(v - m); }
    }
    __shared__ float sm[POST_MAX_THREADS];
    __shared__ float ss[POST_MAX_THREADS];
    sm[threadIdx.x] = m;
    ss[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            float a = sm[threadIdx.x], b = ss[threadIdx.x];
            post_lse_merge(a, b, sm[threadIdx.x + k], ss[threadIdx.x + k]);
            sm[threadIdx.x] = a;
            ss[threadIdx.x] = b;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[row] = x[targets[row]] - (sm[0] + logf(ss[0]));
}

// dlogits[row, i] = g_row * (onehot(t_row)[i] - softmax(logits[row])[i]), where
// res_grad[2*row] is the forward result (so lse = x[t] - result) and res_grad[2*row+1] is g_row.
extern "C" __global__ void post_token_logprobs_bwd(const float* logits, const unsigned int* targets,
                                                   const float* res_grad, float* dlogits,
                                                   int rows, int vocab) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* x = logits + (size_t)row * vocab;
    float* d = dlogits + (size_t)row * vocab;
    const unsigned int t = targets[row];
    const float lse = x[t] - res_grad[2 * row];
    const float g = res_grad[2 * row + 1];
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        d[i] = (i == (int)t ? g : 0.0f) - g * expf(x[i] - lse);
    }
}
