//! The SDK's integration tests: one binary.

mod attribution;
mod export;
mod support;
mod sync_and_async;
