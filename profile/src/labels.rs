//! The labels of a decoded profile: the label names of every input (query parameters, pprof
//! sample labels, Pyroscope label pairs, a legacy `/ingest` app name) are mapped by
//! [`SampleLabels::apply`], in the model crate, shared with the sidecar; more specific sources
//! (sample labels) are applied after general ones (query parameters). Here: the check, with
//! its own error for a missing service.

use profwatch_model::profile::SampleLabels;
use profwatch_model::Limits;

use super::error::ProfileError;

/// Refuses a label set the stores cannot take ([`SampleLabels::validate`]); no service at all
/// is [`ProfileError::NoService`], which says where a service can come from.
pub fn validate(labels: &SampleLabels, limits: &Limits) -> Result<(), ProfileError> {
    if labels.service.is_empty() {
        return Err(ProfileError::NoService);
    }
    labels.validate(limits)?;
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
            l.apply(k, v);
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
