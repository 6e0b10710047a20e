//! One `perf_event_open` cpu-clock sampling event per thread and its mmap ring buffer.
//!
//! Invariants:
//! - An event samples one thread (`pid` = a thread id, any process the caller may trace;
//!   `cpu = -1`) every `1 / frequency` seconds of that thread's CPU time, recording
//!   `PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CALLCHAIN` with the kernel part of the
//!   callchain excluded. The kernel unwinds user stacks by frame pointers.
//! - The ring is `1 + 2^n` pages: the control page, then the data area. The kernel is the only
//!   writer of `data_head`; [`Ring::drain`] is the only writer of `data_tail` and must be called
//!   from one thread at a time (it takes `&self`, so the caller — the sampler thread — keeps
//!   that promise). [`Ring::head`] may be read from any thread: it is one atomic load and is
//!   what the request path uses to tell whether a sample landed during a poll.
//! - The mapping lives as long as the [`Ring`]; dropping it unmaps and closes the event.
//!
//! This is the sampler's only module with `unsafe`: `ioctl`, `mmap`/`munmap`, and reads of the
//! shared pages (the syscall itself is `perf_sys`'s). Each block says why it is sound.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::perf_sys::{
    self, PerfEventAttr, ATTR_EXCLUDE_CALLCHAIN_KERNEL, ATTR_EXCLUDE_HV, ATTR_EXCLUDE_KERNEL,
    PERF_TYPE_SOFTWARE,
};

const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_SAMPLE_CALLCHAIN: u64 = 1 << 5;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// Callchain entries at or above this are context markers (`PERF_CONTEXT_USER`, ...).
const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;
/// Return addresses below this are garbage read through a missing frame pointer.
const MIN_CODE_ADDR: u64 = 0x1000;
/// Offsets of `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// What to sample and how much room to give it.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    pub frequency_hz: u32,
    /// Deepest callchain the kernel records (capped by `kernel.perf_event_max_stack`).
    pub max_frames: u16,
    /// Data pages of the ring; a power of two.
    pub data_pages: usize,
}

/// One record read out of a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A stack sample at ring offset `offset`: user frames, leaf first.
    Sample {
        offset: u64,
        tid: u32,
        time: u64,
        ips: Vec<u64>,
    },
    /// The kernel dropped `count` samples because the ring was full.
    Lost { count: u64 },
}

/// A sampling event on one thread with its mapped ring buffer.
#[derive(Debug)]
pub(crate) struct Ring {
    fd: OwnedFd,
    base: NonNull<u8>,
    map_len: usize,
    page: usize,
    data_size: usize,
}

// SAFETY: the mapping is process-wide memory owned by this value; `head` is an atomic load,
// `data_tail` an atomic store, and ring data is only read between tail and head, which the
// kernel does not write until the tail moves past it. Only `drain` moves the tail and its
// callers serialise it (module invariant).
unsafe impl Send for Ring {}
// SAFETY: see `Send`; every shared access goes through atomics or the serialised `drain`.
unsafe impl Sync for Ring {}

impl Ring {
    /// Opens a cpu-clock sampling event on thread `tid` (0 = the calling thread) and maps
    /// its ring. Tries with kernel-mode samples first, then user-only (for
    /// `perf_event_paranoid >= 2` without privileges).
    pub(crate) fn open(tid: u32, spec: &EventSpec) -> io::Result<Ring> {
        let fd = match open_event(tid, spec, false) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
                open_event(tid, spec, true)?
            }
            Err(e) => return Err(e),
        };
        // SAFETY: sysconf has no memory effects.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        let data_pages = spec.data_pages.max(1).next_power_of_two();
        let map_len = page * (1 + data_pages);
        // SAFETY: a fresh shared read-write mapping of the perf fd, as perf_event_open(2)
        // documents (read-write so that we may update `data_tail`); the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Ring {
            fd,
            base,
            map_len,
            page,
            data_size: page * data_pages,
        })
    }

    fn control(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset` is DATA_HEAD or DATA_TAIL, 8-byte aligned u64 fields inside the
        // mapped control page, which lives as long as `self`. AtomicU64 has u64's layout.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The kernel's write position: grows by every record written. One atomic load.
    #[inline]
    pub(crate) fn head(&self) -> u64 {
        self.control(DATA_HEAD).load(Ordering::Acquire)
    }

    /// Reads records from the tail up to `head` (a value [`Ring::head`] returned), hands
    /// each to `f`, and frees what was consumed. `f` returns false to stop before a record,
    /// which then stays in the ring. Must not be called from two threads at once.
    pub(crate) fn drain(&self, head: u64, mut f: impl FnMut(Record) -> bool) {
        let tail_cell = self.control(DATA_TAIL);
        let mut tail = tail_cell.load(Ordering::Relaxed);
        let mut scratch = Vec::new();
        while tail < head {
            let mut header = [0u8; 8];
            self.copy_out(tail, &mut header);
            let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
            let size = u64::from(u16::from_ne_bytes([header[6], header[7]]));
            if size < 8 || tail + size > head {
                // A torn or corrupt record: drop everything up to the head.
                tail = head;
                break;
            }
            let record = match kind {
                PERF_RECORD_SAMPLE => {
                    scratch.resize(size as usize - 8, 0);
                    self.copy_out(tail + 8, &mut scratch);
                    parse_sample(tail, &scratch)
                }
                PERF_RECORD_LOST if size >= 24 => {
                    let mut body = [0u8; 16];
                    self.copy_out(tail + 8, &mut body);
                    let mut count = [0u8; 8];
                    count.copy_from_slice(&body[8..16]);
                    Some(Record::Lost {
                        count: u64::from_ne_bytes(count),
                    })
                }
                _ => None,
            };
            if let Some(record) = record {
                if !f(record) {
                    break;
                }
            }
            tail += size;
        }
        tail_cell.store(tail, Ordering::Release);
    }

    /// Whether everything the kernel wrote has been consumed.
    pub(crate) fn is_drained(&self) -> bool {
        self.control(DATA_TAIL).load(Ordering::Relaxed) >= self.head()
    }

    /// Copies `out.len()` bytes at ring offset `at` (wrapping) into `out`.
    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let pos = ((at + done as u64) % self.data_size as u64) as usize;
            let n = (self.data_size - pos).min(out.len() - done);
            // SAFETY: `pos + n <= data_size`, so the source lies inside the data area, which
            // starts one page after `base` and is mapped for `self`'s lifetime; the kernel
            // does not write between tail and head, the only range we read.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.base.as_ptr().add(self.page + pos),
                    out.as_mut_ptr().add(done),
                    n,
                );
            }
            done += n;
        }
    }

    /// Stops (false) or resumes (true) sampling.
    pub(crate) fn set_enabled(&self, enabled: bool) -> io::Result<()> {
        let req = if enabled {
            PERF_EVENT_IOC_ENABLE
        } else {
            PERF_EVENT_IOC_DISABLE
        };
        // SAFETY: an argument-less perf ioctl on an fd we own.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; nothing borrows it any more
        // (borrows of `self` have ended).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

fn parse_sample(offset: u64, body: &[u8]) -> Option<Record> {
    let u64_at = |at: usize| -> Option<u64> {
        let bytes = body.get(at..at + 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        Some(u64::from_ne_bytes(b))
    };
    let tid = u32::try_from(u64_at(0)? >> 32).ok()?;
    let time = u64_at(8)?;
    let nr = usize::try_from(u64_at(16)?).ok()?;
    let mut ips = Vec::with_capacity(nr.min(512));
    for i in 0..nr {
        let ip = u64_at(24 + 8 * i)?;
        if ip >= PERF_CONTEXT_MAX {
            continue;
        }
        if ip < MIN_CODE_ADDR {
            // Frame-pointer unwinding ran into a frame without one: the rest is noise.
            break;
        }
        ips.push(ip);
    }
    Some(Record::Sample {
        offset,
        tid,
        time,
        ips,
    })
}

fn open_event(tid: u32, spec: &EventSpec, user_only: bool) -> io::Result<OwnedFd> {
    let period_ns = 1_000_000_000 / u64::from(spec.frequency_hz.max(1));
    let mut flags = ATTR_EXCLUDE_HV | ATTR_EXCLUDE_CALLCHAIN_KERNEL;
    if user_only {
        flags |= ATTR_EXCLUDE_KERNEL;
    }
    let attr = PerfEventAttr {
        sample_period: period_ns,
        sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CALLCHAIN,
        flags,
        sample_max_stack: spec.max_frames,
        ..PerfEventAttr::new(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK)
    };
    perf_sys::perf_event_open(&attr, tid as libc::pid_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sample_and_drops_context_markers() {
        let mut body = Vec::new();
        body.extend_from_slice(&((7u64 << 32) | 7).to_ne_bytes());
        body.extend_from_slice(&99u64.to_ne_bytes());
        body.extend_from_slice(&3u64.to_ne_bytes());
        for ip in [(-512i64) as u64, 0x1000, 0x2000] {
            body.extend_from_slice(&ip.to_ne_bytes());
        }
        assert_eq!(
            parse_sample(64, &body),
            Some(Record::Sample {
                offset: 64,
                tid: 7,
                time: 99,
                ips: vec![0x1000, 0x2000]
            })
        );
        assert_eq!(parse_sample(0, &body[..20]), None);
    }
}
