//! The CUDA C sources of the hand-written kernels, for NVRTC (`cudarc::nvrtc::compile_ptx`).
//! Each op's CPU twin in [`crate::ops`] is the reference its CUDA forward must match. This build
//! does not launch them (see [`crate::backend_note`]); they are shipped so a CUDA build can
//! compile and load them without a separate file lookup.

/// `post_token_logprobs_fwd`, `post_token_logprobs_bwd`.
pub const TOKEN_LOGPROBS: &str = include_str!("../cuda/token_logprobs.cu");
/// `post_softmax_fwd`, `post_softmax_bwd`.
pub const SOFTMAX: &str = include_str!("../cuda/softmax.cu");
/// `post_rms_norm_fwd`, `post_rms_norm_bwd`.
pub const RMS_NORM: &str = include_str!("../cuda/rms_norm.cu");
/// `post_rope`.
pub const ROPE: &str = include_str!("../cuda/rope.cu");

/// Every source with its entry points, so a loader can register them by name.
pub const ALL: &[(&str, &str, &[&str])] = &[
    (
        "token_logprobs",
        TOKEN_LOGPROBS,
        &["post_token_logprobs_fwd", "post_token_logprobs_bwd"],
    ),
    (
        "softmax",
        SOFTMAX,
        &["post_softmax_fwd", "post_softmax_bwd"],
    ),
    (
        "rms_norm",
        RMS_NORM,
        &["post_rms_norm_fwd", "post_rms_norm_bwd"],
    ),
    ("rope", ROPE, &["post_rope"]),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_entry_point_is_defined() {
        for (name, src, entries) in super::ALL {
            for e in *entries {
                assert!(
                    src.contains(&format!("extern \"C\" __global__ void {e}(")),
                    "{name}.cu lacks {e}"
                );
            }
        }
    }
}
