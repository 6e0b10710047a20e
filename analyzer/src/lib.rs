//! Regression detection: snapshot compare, change points, attribution, alerts. Arrives with issue #5.
//!
//! Nothing lives here yet: the crate exists so that the workspace has its final shape.
