//! The web dashboard. Arrives with issue #6.
//!
//! Nothing lives here yet: the crate exists so that the workspace has its final shape.
