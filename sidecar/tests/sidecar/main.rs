//! The sidecar (`profwatch agent`) end to end, in-process: local socket and UDP in, a mock
//! collector out, the disk spool in between.

mod bad_input;
mod memory;
mod profiling;
mod python;
mod shipping;
mod support;
mod unwinding;
