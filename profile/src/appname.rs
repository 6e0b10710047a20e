//! Pyroscope's legacy application name, `my.app.cpu{env=staging,region=us-west-1}`: the app
//! name, an optional profile-type suffix, and labels in braces.

use super::error::ProfileError;

/// Suffixes Pyroscope agents append to the app name to name the profile type.
const PROFILE_TYPES: &[&str] = &[
    "cpu",
    "itimer",
    "wall",
    "alloc_objects",
    "alloc_space",
    "inuse_objects",
    "inuse_space",
    "goroutines",
    "mutex_count",
    "mutex_duration",
    "block_count",
    "block_duration",
    "lock_count",
    "lock_duration",
    "exceptions",
];

/// A parsed app name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName {
    /// The name without the profile-type suffix.
    pub app: String,
    /// The suffix (`cpu`), or empty.
    pub profile_type: String,
    pub labels: Vec<(String, String)>,
}

impl AppName {
    /// Whether the profile is CPU time (or untyped), the only kind this server stores.
    pub fn is_cpu(&self) -> bool {
        matches!(self.profile_type.as_str(), "" | "cpu" | "itimer")
    }
}

/// Parses `name[{k=v,...}]`.
pub fn parse(name: &str) -> Result<AppName, ProfileError> {
    let bad = |detail: &str| ProfileError::Folded {
        line: 0,
        detail: format!("`name` = {name:?}: {detail}"),
    };
    let (base, labels) = match name.split_once('{') {
        None => (name, ""),
        Some((base, rest)) => (
            base,
            rest.strip_suffix('}')
                .ok_or_else(|| bad("labels must end with `}`"))?,
        ),
    };
    let base = base.trim();
    let (app, profile_type) = match base.rsplit_once('.') {
        Some((app, t)) if PROFILE_TYPES.contains(&t) => (app, t),
        _ => (base, ""),
    };
    let mut pairs = Vec::new();
    for pair in labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad("labels are `key=value` pairs separated by commas"))?;
        pairs.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(AppName {
        app: app.to_owned(),
        profile_type: profile_type.to_owned(),
        labels: pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let n = parse("my.app.cpu{env=staging, region=us-west-1}").expect("ok");
        assert_eq!((n.app.as_str(), n.profile_type.as_str()), ("my.app", "cpu"));
        assert_eq!(n.labels[1], ("region".to_owned(), "us-west-1".to_owned()));
        let n = parse("shop").expect("ok");
        assert_eq!((n.app.as_str(), n.is_cpu()), ("shop", true));
        assert!(!parse("shop.alloc_space").expect("ok").is_cpu());
        assert!(parse("shop{a=b").is_err());
    }
}
