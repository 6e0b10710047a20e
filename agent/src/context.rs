//! The request a thread is working for right now, so that code deep inside a handler can
//! label it ([`set_label`], [`set_status`]) without being handed a guard.
//!
//! Invariants: a frame is pushed when a synchronous scope starts, or for the duration of one
//! poll of an instrumented future, and is removed by the same owner (by id, so scopes dropped
//! out of order still remove their own frame). The innermost (last pushed) frame receives
//! [`set_label`] and [`set_status`]; with no frame they do nothing. The stack's storage is
//! reused, so pushing allocates only when a thread nests deeper than ever before.

use std::cell::{Cell, RefCell};

use crate::labels::{LabelSet, LabelText};

#[derive(Debug)]
struct Frame {
    id: u64,
    /// False for requests that were not sampled: labels set inside them go nowhere.
    active: bool,
    labels: LabelSet,
    status: Option<u16>,
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Pushes a frame and returns its id.
pub(crate) fn push(active: bool, labels: LabelSet, status: Option<u16>) -> u64 {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1));
        id
    });
    FRAMES.with(|f| {
        f.borrow_mut().push(Frame {
            id,
            active,
            labels,
            status,
        })
    });
    id
}

/// Removes the frame `id` and hands back what was set in it.
pub(crate) fn pop(id: u64) -> Option<(LabelSet, Option<u16>)> {
    FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let at = frames.iter().rposition(|fr| fr.id == id)?;
        let frame = frames.remove(at);
        Some((frame.labels, frame.status))
    })
}

/// Applies `f` to frame `id` (a guard labelling its own request).
pub(crate) fn with_frame<R>(
    id: u64,
    f: impl FnOnce(&mut LabelSet, &mut Option<u16>) -> R,
) -> Option<R> {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        let frame = frames.iter_mut().rev().find(|fr| fr.id == id)?;
        Some(f(&mut frame.labels, &mut frame.status))
    })
}

/// Sets a label on the request this thread is running (the innermost scope, or the
/// instrumented future being polled). Returns false when there is none, when it is not
/// sampled, or when the label is invalid or over the bound of 16 (then it is counted in
/// [`crate::Stats::labels_dropped`]).
pub fn set_label(key: impl Into<LabelText>, value: impl Into<LabelText>) -> bool {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        match frames.last_mut() {
            Some(frame) if frame.active => frame.labels.set(key.into(), value.into()),
            _ => false,
        }
    })
}

/// Sets the status of the request this thread is running, for scopes and instrumented
/// futures (the layer takes the HTTP response's status instead).
pub fn set_status(status: u16) {
    FRAMES.with(|frames| {
        if let Some(frame) = frames.borrow_mut().last_mut() {
            frame.status = Some(status);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innermost_frame_gets_labels_and_out_of_order_pops_work() {
        let outer = push(true, LabelSet::new(), None);
        let inner = push(true, LabelSet::new(), None);
        assert!(set_label("where", "inner"));
        let (outer_labels, _) = pop(outer).expect("outer frame");
        assert!(outer_labels.is_empty());
        set_status(201);
        let (inner_labels, status) = pop(inner).expect("inner frame");
        assert_eq!(inner_labels.iter().next(), Some(("where", "inner")));
        assert_eq!(status, Some(201));
        assert!(!set_label("nobody", "listens"));
    }

    #[test]
    fn unsampled_frames_swallow_labels() {
        let outer = push(true, LabelSet::new(), None);
        let inner = push(false, LabelSet::new(), None);
        assert!(!set_label("k", "v"));
        pop(inner);
        let (labels, _) = pop(outer).expect("outer frame");
        assert!(labels.is_empty());
    }
}
