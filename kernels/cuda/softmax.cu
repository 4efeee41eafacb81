// Softmax over the last dimension and its backward (CUDA twin of kernels/src/ops/softmax.rs).
// Launch with grid = rows, block = a power of two <= 1024 threads.

#define POST_MAX_THREADS 1024

__device__ float post_block_reduce(float v, bool is_max) {
    __shared__ float buf[POST_MAX_THREADS];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            const float o = buf[threadIdx.x + k];
            buf[threadIdx.x] = is_max ? fmaxf(buf[threadIdx.x], o) : buf[threadIdx.x] + o;
        }
        __syncthreads();
    }
    const float r = buf[0];
    __syncthreads();
    return r;
}

extern "C" __global__ void post_softmax_fwd(const float* x, float* y, int rows, int d) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* xr = x + (size_t)row * d;
    float* yr = y + (size_t)row * d;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < d; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = post_block_reduce(m, true);
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += expf(xr[i] - m);
    s = post_block_reduce(s, false);
    const float inv = 1.0f / s;
    for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = expf(xr[i] - m) * inv;
}

// dx = y * (g - sum(g * y)).
extern "C" __global__ void post_softmax_bwd(const float* y, const float* g, float* dx, int rows, int d) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const size_t o = (size_t)row * d;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dot += y[o + i] * g[o + i];
    dot = post_block_reduce(dot, false);
    for (int i = threadIdx.x; i < d; i += blockDim.x) dx[o + i] = y[o + i] * (g[o + i] - dot);
}
