//! How the label names of every input (query parameters, pprof sample labels, Pyroscope label
//! pairs, a legacy `/ingest` app name) map onto [`SampleLabels`].
//!
//! `service`/`service_name` → service; `endpoint` → endpoint; `build`/`version` → build;
//! `dc`/`region` → dc; `host`/`hostname` → host; keys starting with `__` (Pyroscope's
//! `__name__`, `__session_id__`, ...) are internal and dropped; everything else is an extra
//! label. A later value for the same field replaces an earlier one, so more specific sources
//! (sample labels) are applied after general ones (query parameters).

use profwatch_model::event::check_labels;
use profwatch_model::profile::SampleLabels;
use profwatch_model::{Limits, ValidationError};

use super::error::ProfileError;

/// Sets the field `key` names to `value`.
pub fn apply(labels: &mut SampleLabels, key: &str, value: &str) {
    let slot = match key {
        "service" | "service_name" => &mut labels.service,
        "endpoint" => &mut labels.endpoint,
        "build" | "version" => &mut labels.build,
        "dc" | "region" => &mut labels.dc,
        "host" | "hostname" => &mut labels.host,
        k if k.starts_with("__") || k.is_empty() => return,
        k => {
            labels.extra.insert(k.to_owned(), value.to_owned());
            return;
        }
    };
    value.clone_into(slot);
}

/// Refuses a label set the stores cannot take: no service, fields too long, too many or bad
/// extra labels (the same limits as request events).
pub fn validate(labels: &SampleLabels, limits: &Limits) -> Result<(), ProfileError> {
    if labels.service.is_empty() {
        return Err(ProfileError::NoService);
    }
    let fields = [
        ("service", &labels.service, limits.max_name_len),
        ("endpoint", &labels.endpoint, limits.max_endpoint_len),
        ("build", &labels.build, limits.max_name_len),
        ("dc", &labels.dc, limits.max_name_len),
        ("host", &labels.host, limits.max_name_len),
    ];
    for (field, value, max) in fields {
        if value.len() > max {
            return Err(ValidationError::TooLong {
                field,
                len: value.len(),
                max,
            }
            .into());
        }
        if let Some(at) = value.find(char::is_control) {
            return Err(ValidationError::ControlChar { field, at }.into());
        }
    }
    check_labels(&labels.extra, limits)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let mut l = SampleLabels::default();
        for (k, v) in [
            ("service_name", "shop"),
            ("version", "812"),
            ("region", "eu1"),
            ("__name__", "process_cpu"),
            ("flag", "on"),
            ("endpoint", "GET /a"),
        ] {
            apply(&mut l, k, v);
        }
        assert_eq!(
            (&*l.service, &*l.build, &*l.dc, &*l.endpoint),
            ("shop", "812", "eu1", "GET /a")
        );
        assert_eq!(l.extra.len(), 1);
        assert!(validate(&l, &Limits::default()).is_ok());
        assert!(matches!(
            validate(&SampleLabels::default(), &Limits::default()),
            Err(ProfileError::NoService)
        ));
    }
}
