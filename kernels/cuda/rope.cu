// Rotary position embedding, "rotate half" layout (CUDA twin of kernels/src/ops/rope.rs).
// x is [b, h, t, d]; cos and sin are [t, d/2]. sign = +1 forward, -1 for the backward (the
// inverse rotation). One thread per (row, pair); grid-stride loop.

extern "C" __global__ void post_rope(const float* x, const float* cos, const float* sin, float* y,
                                     int rows, int t, int d, float sign) {
    const int half = d / 2;
    const size_t total = (size_t)rows * half;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < total;
         k += (size_t)gridDim.x * blockDim.x) {
        const size_t row = k / half;
        const int i = (int)(k % half);
        const int pos = (int)(row % t);
        const float c = cos[pos * half + i];
        const float s = sign * sin[pos * half + i];
        const float x1 = x[row * d + i];
        const float x2 = x[row * d + i + half];
        y[row * d + i] = x1 * c - x2 * s;
        y[row * d + i + half] = x1 * s + x2 * c;
    }
}
