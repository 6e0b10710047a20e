//! Request scopes for synchronous code: a guard that measures the calling thread from its
//! creation to its drop.
//!
//! Invariants: a guard is `!Send`: it must be dropped on the thread that created it, since
//! it subtracts two samples of that thread's counters. Creating and dropping a sampled guard
//! costs two counter reads, two clock reads and one `try_send`; an unsampled guard reads no
//! counter. Labels set while the guard is the innermost scope belong to it.

use std::marker::PhantomData;
use std::time::Instant;

use crate::agent::Agent;
use crate::context;
use crate::counters::{self, Sample};
use crate::endpoint::EndpointName;
use crate::labels::{LabelSet, LabelText};
use crate::measure::{record, Finished};
use crate::sampler;

/// Measures one synchronous request; records it when dropped.
#[must_use = "the scope measures until it is dropped; bind it with `let _guard = ...`"]
#[derive(Debug)]
pub struct ScopeGuard<'a> {
    active: Option<Active<'a>>,
    frame: Option<u64>,
    _not_send: PhantomData<*const ()>,
}

#[derive(Debug)]
struct Active<'a> {
    agent: &'a Agent,
    endpoint: EndpointName,
    weight: f64,
    started: Instant,
    start: Sample,
    /// The stack sampler's attribution state (see `crate::sampler`).
    tag: sampler::RequestTag,
    entered: Option<sampler::Entered>,
}

impl Agent {
    /// Measures the calling thread from now until the guard is dropped.
    pub fn scope(&self, endpoint: impl Into<EndpointName>) -> ScopeGuard<'_> {
        ScopeGuard::start(Some(self), endpoint.into())
    }
}

impl<'a> ScopeGuard<'a> {
    pub(crate) fn start(agent: Option<&'a Agent>, endpoint: EndpointName) -> ScopeGuard<'a> {
        let Some(agent) = agent else {
            return ScopeGuard {
                active: None,
                frame: None,
                _not_send: PhantomData,
            };
        };
        let Some(weight) = agent.sample() else {
            return ScopeGuard {
                active: None,
                frame: Some(context::push(false, LabelSet::new(), None)),
                _not_send: PhantomData,
            };
        };
        let frame = Some(context::push(true, LabelSet::new(), None));
        let mut tag = sampler::RequestTag::default();
        let entered = Some(sampler::enter(&mut tag));
        let started = Instant::now();
        let start = counters::read(agent.counters());
        ScopeGuard {
            active: Some(Active {
                agent,
                endpoint,
                weight,
                started,
                start,
                tag,
                entered,
            }),
            frame,
            _not_send: PhantomData,
        }
    }

    /// Whether this request is measured (sampled, with an agent installed).
    pub fn is_sampled(&self) -> bool {
        self.active.is_some()
    }

    /// Sets a label on this request; false if refused (see [`crate::set_label`]).
    pub fn set_label(&self, key: impl Into<LabelText>, value: impl Into<LabelText>) -> bool {
        match (self.frame, &self.active) {
            (Some(id), Some(_)) => {
                context::with_frame(id, |labels, _| labels.set(key.into(), value.into()))
                    .unwrap_or(false)
            }
            _ => false,
        }
    }

    /// Sets this request's status (default 0, "none").
    pub fn set_status(&self, status: u16) {
        if let Some(id) = self.frame {
            context::with_frame(id, |_, s| *s = Some(status));
        }
    }
}

impl Drop for ScopeGuard<'_> {
    fn drop(&mut self) {
        let Some(mut active) = self.active.take() else {
            if let Some(id) = self.frame {
                context::pop(id);
            }
            return;
        };
        let end = counters::read(active.agent.counters());
        if let Some(entered) = active.entered.take() {
            sampler::leave(entered, &mut active.tag);
        }
        let (labels, status) = self
            .frame
            .and_then(context::pop)
            .unwrap_or_else(|| (LabelSet::new(), None));
        let delta = active.start.until(&end);
        record(
            active.agent,
            &active.tag,
            Finished {
                endpoint: active.endpoint,
                weight: active.weight,
                started: active.started,
                labels,
                status: status.unwrap_or(0),
                cpu_ns: delta.cpu_ns,
                instructions: delta.instructions,
            },
        );
    }
}
