//! A value that never shows in `Debug` output: tokens and passwords held by configurations,
//! which derive `Debug` for their other fields.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::Deserialize;

/// `value` behind `Deref`; `{:?}` prints `<redacted>`. Deserialises as the value itself.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(pub T);

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> Deref for Secret<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Secret<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_serde_reads_it_whole() {
        #[derive(Debug, Deserialize)]
        struct Cfg {
            token: Secret<String>,
        }
        let c: Cfg = serde_json::from_str(r#"{"token": "s3cret-token-value"}"#).expect("json");
        assert_eq!(c.token.as_str(), "s3cret-token-value");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
