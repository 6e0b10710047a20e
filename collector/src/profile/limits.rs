//! The caps every profile input is held to. They bound memory per request: a profile is refused
//! (never truncated) once it passes one.

/// Bounds on one profile.
#[derive(Debug, Clone)]
pub struct ProfileLimits {
    /// Frames in one stack (deeper stacks are refused with 400).
    pub max_frames: usize,
    /// Samples (pprof) or distinct stacks (folded) in one profile (more are refused with 413).
    pub max_samples: usize,
    /// Bytes in one frame name.
    pub max_frame_len: usize,
    /// Bytes a gzipped profile may inflate to (more is refused with 413).
    pub max_decompressed: usize,
}

impl Default for ProfileLimits {
    fn default() -> Self {
        ProfileLimits {
            max_frames: 2048,
            max_samples: 1_000_000,
            max_frame_len: 4096,
            max_decompressed: 256 << 20,
        }
    }
}
