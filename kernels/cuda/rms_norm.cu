// RMSNorm forward and backward (CUDA twin of kernels/src/ops/rms_norm.rs).
// Launch with grid = rows, block = a power of two <= 1024 threads. The backward accumulates the
// weight gradient with atomicAdd into `dw`, which the caller zeroes first.

#define POST_MAX_THREADS 1024

__device__ float post_block_sum(float v) {
    __shared__ float buf[POST_MAX_THREADS];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) buf[threadIdx.x] += buf[threadIdx.x + k];
        __syncthreads();
    }
    const float r = buf[0];
    __syncthreads();
    return r;
}

extern "C" __global__ void post_rms_norm_fwd(const float* x, const float* w, float* y,
                                             int rows, int d, float eps) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const size_t o = (size_t)row * d;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) ss += x[o + i] * x[o + i];
    const float r = rsqrtf(post_block_sum(ss) / d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) y[o + i] = x[o + i] * r * w[i];
}

// dx = r * (g*w - xhat * mean(g*w*xhat)), dw += g * xhat.
extern "C" __global__ void post_rms_norm_bwd(const float* x, const float* w, const float* g,
                                             float* dx, float* dw, int rows, int d, float eps) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const size_t o = (size_t)row * d;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) ss += x[o + i] * x[o + i];
    const float r = rsqrtf(post_block_sum(ss) / d + eps);
    float dot = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dot += g[o + i] * w[i] * x[o + i] * r;
    const float mean = post_block_sum(dot) / d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float xhat = x[o + i] * r;
        dx[o + i] = r * (g[o + i] * w[i] - xhat * mean);
        atomicAdd(&dw[i], g[o + i] * xhat);
    }
}
