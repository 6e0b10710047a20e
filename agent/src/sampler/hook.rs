//! The request path's side of attribution: which request each stretch of a thread's sample
//! ring belongs to.
//!
//! A thread's samples land in its perf ring at increasing offsets. Around every measured
//! stretch (a synchronous scope, or one poll of an instrumented future) the thread reads the
//! ring's `data_head` (one atomic load of a mapped page, no syscall): the samples written
//! between the stretch's two reads were taken while that request ran. Only when the head moved
//! — a sample landed, about `frequency` times per second of CPU — does the thread send the
//! range `[start, end)` with the request's tag to the sampler thread, and only a request that
//! got a range sends its labels when it finishes. Everything else costs two atomic loads, one
//! atomic store and a few thread-local cells.
//!
//! Invariants:
//! - Ranges of one thread are disjoint and sent in increasing order; nested stretches split
//!   the outer one, and the innermost request owns the samples (as with `set_label`).
//! - `active` holds the start offset of the open stretch (or [`IDLE`]) and is stored *after*
//!   the range of a closed stretch is sent, so a sampler that reads `data_head`, then
//!   `active`, then the ranges either finds a sample's range or knows its stretch is still
//!   open. The kernel writes a sample on the sampled thread's CPU, after a barrier, so a
//!   sample seen in the ring implies the `active` store made before it is visible too.
//! - Nothing here blocks or locks, except once per thread and sampler session, when the
//!   thread opens its perf event and registers the ring. Channels are bounded and only
//!   `try_send` is used; a full channel drops (and counts) the message, and the samples it
//!   covered become unattributed.
//! - A request's tag is unique per process: the thread's registration number in the high 32
//!   bits, a per-thread counter below.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use super::session::{self, Done, Range, Session, ThreadRing, IDLE};
use crate::endpoint::EndpointName;
use crate::labels::LabelSet;

/// Per-request attribution state, held by the SDK's request measure.
#[derive(Debug, Default)]
pub(crate) struct RequestTag {
    id: u64,
    /// Some range was sent for this request: its labels must follow when it finishes.
    hit: bool,
}

/// What [`enter`] displaced, restored by [`leave`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Entered {
    armed: bool,
    outer_tag: u64,
    outer_hit: bool,
}

const UNARMED: Entered = Entered {
    armed: false,
    outer_tag: 0,
    outer_hit: false,
};

struct Attached {
    generation: u64,
    ring: Option<Arc<ThreadRing>>,
    ranges: Option<SyncSender<Range>>,
    done: Option<SyncSender<Done>>,
    session: Option<Arc<Session>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(ring) = &self.ring {
            ring.active.store(IDLE, Ordering::Release);
        }
    }
}

struct Local {
    attached: RefCell<Option<Attached>>,
    tag: Cell<u64>,
    start: Cell<u64>,
    hit: Cell<bool>,
    next: Cell<u32>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            attached: RefCell::new(None),
            tag: Cell::new(0),
            start: Cell::new(0),
            hit: Cell::new(false),
            next: Cell::new(0),
        }
    };
}

/// Opens a measured stretch for `tag` on this thread.
#[inline]
pub(crate) fn enter(tag: &mut RequestTag) -> Entered {
    let generation = session::generation();
    LOCAL
        .try_with(|local| {
            let mut attached = local.attached.borrow_mut();
            if attached.as_ref().map_or(0, |a| a.generation) != generation {
                *attached = attach(generation);
            }
            let Some(Attached {
                ring: Some(ring),
                ranges: Some(ranges),
                session: Some(session),
                ..
            }) = attached.as_ref()
            else {
                return UNARMED;
            };
            if tag.id == 0 {
                let n = local.next.get().wrapping_add(1);
                local.next.set(n);
                tag.id = (ring.id << 32) | u64::from(n);
            }
            let head = ring.ring.head();
            close(local, ring, ranges, session, head);
            let entered = Entered {
                armed: true,
                outer_tag: local.tag.replace(tag.id),
                outer_hit: local.hit.replace(false),
            };
            local.start.set(head);
            ring.active.store(head, Ordering::Release);
            entered
        })
        .unwrap_or(UNARMED)
}

/// Closes the stretch [`enter`] opened and resumes the one it displaced.
#[inline]
pub(crate) fn leave(entered: Entered, tag: &mut RequestTag) {
    if !entered.armed {
        return;
    }
    let _ = LOCAL.try_with(|local| {
        let attached = local.attached.borrow();
        let Some(Attached {
            ring: Some(ring),
            ranges: Some(ranges),
            session: Some(session),
            ..
        }) = attached.as_ref()
        else {
            return;
        };
        let head = ring.ring.head();
        close(local, ring, ranges, session, head);
        tag.hit |= local.hit.get();
        local.tag.set(entered.outer_tag);
        local.hit.set(entered.outer_hit);
        local.start.set(head);
        let active = if entered.outer_tag == 0 { IDLE } else { head };
        ring.active.store(active, Ordering::Release);
    });
}

/// Ends the current stretch at `head`, sending its range if samples landed in it.
#[inline]
fn close(
    local: &Local,
    ring: &ThreadRing,
    ranges: &SyncSender<Range>,
    session: &Session,
    head: u64,
) {
    let start = local.start.get();
    let tag = local.tag.get();
    if tag == 0 || head == start {
        return;
    }
    local.hit.set(true);
    let range = Range {
        ring: ring.id,
        start,
        end: head,
        tag,
    };
    if ranges.try_send(range).is_err() {
        session.stats.ranges_dropped.fetch_add(1, Ordering::Relaxed);
    }
    local.start.set(head);
}

/// Hands the labels of a finished request to the sampler if it owns samples. Clones the
/// label set (which allocates only for owned label strings), at most once per sampled request.
pub(crate) fn finish(tag: &RequestTag, endpoint: &EndpointName, labels: &LabelSet) {
    if !tag.hit {
        return;
    }
    let _ = LOCAL.try_with(|local| {
        let attached = local.attached.borrow();
        let (Some(done), Some(session)) = (
            attached.as_ref().and_then(|a| a.done.as_ref()),
            attached.as_ref().and_then(|a| a.session.as_ref()),
        ) else {
            return;
        };
        let msg = Done {
            tag: tag.id,
            endpoint: endpoint.clone(),
            labels: labels.clone(),
        };
        if done.try_send(msg).is_err() {
            session.stats.done_dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Joins the running session (opening this thread's perf event), or detaches.
#[cold]
fn attach(generation: u64) -> Option<Attached> {
    if generation == 0 {
        return None;
    }
    let Some(session) = session::current() else {
        return Some(Attached {
            generation,
            ring: None,
            ranges: None,
            done: None,
            session: None,
        });
    };
    let ring = session.register_current_thread();
    Some(Attached {
        generation: session.generation,
        ring,
        ranges: Some(session.ranges_tx.clone()),
        done: Some(session.done_tx.clone()),
        session: Some(session),
    })
}
