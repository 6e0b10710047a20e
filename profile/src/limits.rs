//! The caps every profile input is held to. They bound memory per request: a profile is refused
//! (never truncated) once it passes one. Counts are checked by a scan of the protobuf before
//! anything is decoded or copied, so the memory a profile can take is set by these numbers, not
//! by how far its compressed form expands.
//!
//! With the defaults, the tables a pprof conversion builds stay under about 150 MiB at the very
//! worst (every cap reached at once), besides the decompressed input (`max_decompressed`) and the
//! converted stacks (`max_frame_bytes`).

/// What one frame of a converted stack costs besides its name, in [`ProfileLimits::max_frame_bytes`]
/// (the `String` and its slot in the stack).
pub const FRAME_OVERHEAD: usize = 32;

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
    /// pprof `Location`s in one profile (413).
    pub max_locations: usize,
    /// `Line`s in one location, i.e. functions inlined at one address (400).
    pub max_lines_per_location: usize,
    /// `Line`s in all the locations of one profile (413).
    pub max_lines: usize,
    /// pprof `Function`s in one profile (413).
    pub max_functions: usize,
    /// Entries of the pprof string table (413).
    pub max_strings: usize,
    /// Sample types of a profile, and values of one sample (400).
    pub max_sample_types: usize,
    /// Labels of one pprof sample (400).
    pub max_sample_labels: usize,
    /// Bytes of the converted stacks: each frame of each distinct stack counts its name plus
    /// [`FRAME_OVERHEAD`] (413). This is what a line bomb (a short input whose stacks repeat one
    /// long name many times) runs into.
    pub max_frame_bytes: usize,
}

impl Default for ProfileLimits {
    fn default() -> Self {
        ProfileLimits {
            max_frames: 2048,
            max_samples: 1_000_000,
            max_frame_len: 4096,
            max_decompressed: 256 << 20,
            max_locations: 1_000_000,
            max_lines_per_location: 128,
            max_lines: 4_000_000,
            max_functions: 1_000_000,
            max_strings: 1_000_000,
            max_sample_types: 64,
            max_sample_labels: 64,
            max_frame_bytes: 128 << 20,
        }
    }
}
