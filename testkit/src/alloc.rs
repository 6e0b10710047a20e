//! Peak heap use of one piece of work on one thread, for property tests that hold a decoder to
//! "allocation bounded by the input's limits". A test binary installs [`PeakAlloc`] as its
//! global allocator:
//!
//! ```no_run
//! #[cfg(test)]
//! #[global_allocator]
//! static ALLOC: profwatch_testkit::alloc::PeakAlloc = profwatch_testkit::alloc::PeakAlloc;
//! ```
//!
//! and [`peak_bytes`] then says the most bytes the closure's thread held at once above what it
//! held when the closure began. Counts are per thread (tests run side by side); memory freed on
//! another thread than it was allocated on is not followed, which decoders never do.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, counting each thread's live bytes and their peak.
#[derive(Debug)]
pub struct PeakAlloc;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // Const-initialised and without destructors: reading them never allocates.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: a thread being torn down may free after its locals are gone.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn size(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every call is passed on unchanged to `System`; the counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(size(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(size(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        note(-size(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's to check.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(size(new_size) - size(layout.size()));
        }
        p
    }
}

/// Runs `work` and returns its value with the most heap bytes this thread held at once during
/// it, above what the thread held when it began.
///
/// # Panics
/// When [`PeakAlloc`] is not the binary's global allocator: a bound checked against nothing
/// must not pass.
pub fn peak_bytes<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let value = work();
    let peak = PEAK.with(Cell::get);
    assert!(
        INSTALLED.load(Ordering::Relaxed),
        "profwatch_testkit::alloc::PeakAlloc is not this test binary's global allocator"
    );
    (value, usize::try_from(peak - start).unwrap_or(0))
}

/// Runs `work`; an error naming `what`, the peak and `bound` when its thread held more than
/// `bound` heap bytes at once. `PROFWATCH_PRINT_PEAKS=1` prints every peak (for setting bounds).
pub fn within<T>(what: &str, bound: usize, work: impl FnOnce() -> T) -> Result<T, String> {
    let (value, peak) = peak_bytes(work);
    if std::env::var_os("PROFWATCH_PRINT_PEAKS").is_some() {
        eprintln!("peak {what}: {peak} of {bound}");
    }
    if peak > bound {
        return Err(format!(
            "{what} held {peak} heap bytes at once; its bound is {bound}"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOC: PeakAlloc = PeakAlloc;

    #[test]
    fn the_peak_is_what_was_held_at_once_not_what_was_allocated_in_all() {
        let (_, peak) = peak_bytes(|| {
            for _ in 0..100 {
                drop(std::hint::black_box(vec![0u8; 1 << 20]));
            }
        });
        assert!((1 << 20..2 << 20).contains(&peak), "{peak}");
        let (kept, peak) = peak_bytes(|| {
            (0..4)
                .map(|_| std::hint::black_box(vec![0u8; 1 << 20]))
                .collect::<Vec<_>>()
        });
        assert_eq!(kept.len(), 4);
        assert!((4 << 20..5 << 20).contains(&peak), "{peak}");
        let (_, peak) = peak_bytes(|| ());
        assert!(peak < 1024, "nothing allocated: {peak}");
    }
}
