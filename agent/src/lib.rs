//! The in-process SDK and the sidecar (profwatch agent). Arrives with issue #3.
//!
//! Nothing lives here yet: the crate exists so that the workspace has its final shape.
