//! The extra labels of one request (feature flags and the like).
//!
//! Invariants: a [`LabelSet`] never holds more than [`MAX_LABELS`] labels (the collector's
//! limit), and never a label the collector would refuse (bad key, value too long, control
//! characters): such a label would make the collector reject the whole batch, so it is
//! dropped here and counted instead. Storage is inline, so setting a `&'static str` label
//! allocates nothing.

use std::borrow::Cow;

use profwatch_model::Limits;

/// Labels per event, as the collector's default [`Limits::max_labels`].
pub const MAX_LABELS: usize = 16;

/// Text of a label key or value: borrowed for `'static` strings, owned otherwise.
pub type LabelText = Cow<'static, str>;

/// A bounded, inline set of labels. Setting an existing key replaces its value.
#[derive(Debug, Clone, Default)]
pub struct LabelSet {
    slots: [Option<(LabelText, LabelText)>; MAX_LABELS],
    len: u8,
    dropped: u16,
}

impl LabelSet {
    pub const fn new() -> Self {
        LabelSet {
            slots: [const { None }; MAX_LABELS],
            len: 0,
            dropped: 0,
        }
    }

    /// Sets `key` to `value`; returns false (and counts a drop) when the label is invalid or
    /// the set is full.
    pub fn set(&mut self, key: LabelText, value: LabelText) -> bool {
        if !valid(&key, &value) {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        let len = usize::from(self.len);
        for (k, v) in self.slots[..len].iter_mut().flatten() {
            if *k == key {
                *v = value;
                return true;
            }
        }
        if len == MAX_LABELS {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.slots[len] = Some((key, value));
        self.len += 1;
        true
    }

    /// The labels, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.slots[..usize::from(self.len)]
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Labels refused (invalid or over the bound) since the set was created.
    pub fn dropped(&self) -> u16 {
        self.dropped
    }
}

fn valid(key: &str, value: &str) -> bool {
    let limits = Limits::default();
    let mut chars = key.chars();
    let key_ok = match chars.next() {
        Some(first) => {
            key.len() <= limits.max_label_key_len
                && (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        None => false,
    };
    key_ok && value.len() <= limits.max_label_value_len && !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_counted() {
        let mut set = LabelSet::new();
        for i in 0..20 {
            set.set(format!("k{i}").into(), "v".into());
        }
        assert_eq!((set.len(), set.dropped()), (16, 4));
        assert!(
            set.set("k3".into(), "replaced".into()),
            "replacing never counts"
        );
        assert_eq!(set.iter().nth(3), Some(("k3", "replaced")));
        assert_eq!(set.dropped(), 4);
    }

    #[test]
    fn refuses_what_the_collector_would_refuse() {
        let mut set = LabelSet::new();
        assert!(!set.set("9bad".into(), "v".into()));
        assert!(!set.set("".into(), "v".into()));
        assert!(!set.set("ok".into(), "a\nb".into()));
        assert!(!set.set("ok".into(), "v".repeat(129).into()));
        assert!(set.set("flag.new-ui".into(), "on".into()));
        assert_eq!((set.len(), set.dropped()), (1, 4));
    }
}
