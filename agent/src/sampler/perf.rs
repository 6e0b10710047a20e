//! One `perf_event_open` cpu-clock sampling event per thread and its mmap ring buffer.
//!
//! Invariants:
//! - An event samples one thread (`pid` = a thread id, any process the caller may trace;
//!   `cpu = -1`) every `1 / frequency` seconds of that thread's CPU time, recording
//!   `PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CALLCHAIN` with the kernel part of the
//!   callchain excluded (the kernel unwinds that callchain by frame pointers). With
//!   [`EventSpec::stack_bytes`] > 0 (on x86-64) each sample also carries the user registers
//!   the unwinder needs (`PERF_SAMPLE_REGS_USER`: instruction, stack and frame pointers) and
//!   a copy of that many bytes of the user stack
//!   from the stack pointer up (`PERF_SAMPLE_STACK_USER`), which [`super::unwind`] unwinds off
//!   the hot path.
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
const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
const PERF_SAMPLE_STACK_USER: u64 = 1 << 13;
/// `PERF_SAMPLE_REGS_ABI_NONE`: the sample has no user registers (a kernel thread).
const PERF_SAMPLE_REGS_ABI_NONE: u64 = 0;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// Callchain entries at or above this are context markers (`PERF_CONTEXT_USER`, ...).
const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;
/// Return addresses below this are garbage read through a missing frame pointer.
const MIN_CODE_ADDR: u64 = 0x1000;
/// Smallest ring tried when a larger one is over the locked-memory allowance.
const MIN_FALLBACK_PAGES: usize = 8;
/// Offsets of `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// The user registers sampled, in `perf_regs.h` order (ascending bit numbers): on x86-64
/// `bp` (6), `sp` (7), `ip` (8).
#[cfg(target_arch = "x86_64")]
pub(crate) const USER_REGS_MASK: u64 = (1 << 6) | (1 << 7) | (1 << 8);
/// No user stacks elsewhere (yet): the kernel's frame-pointer callchain only.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const USER_REGS_MASK: u64 = 0;
/// How many registers [`USER_REGS_MASK`] selects.
pub(crate) const USER_REGS: usize = USER_REGS_MASK.count_ones() as usize;

/// Largest user stack copy: a record's size is a `u16`, and the copy shares it with the
/// header, the callchain and the registers.
pub const MAX_STACK_BYTES: u32 = 56 * 1024;

/// What to sample and how much room to give it.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    pub frequency_hz: u32,
    /// Deepest callchain the kernel records (capped by `kernel.perf_event_max_stack`).
    pub max_frames: u16,
    /// Data pages of the ring; a power of two.
    pub data_pages: usize,
    /// Bytes of user stack copied with each sample for unwinding (a multiple of 8, at most
    /// [`MAX_STACK_BYTES`]); 0: the kernel's frame-pointer callchain only.
    pub stack_bytes: u32,
}

/// A sample's user registers and the copy of its user stack, from the stack pointer up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserStack<'a> {
    /// [`USER_REGS_MASK`]'s registers, in its order.
    pub(crate) regs: [u64; USER_REGS],
    /// The bytes the kernel could copy (fewer than asked near the stack's top).
    pub(crate) bytes: &'a [u8],
}

/// One record read out of a ring; a sample's stack copy borrows the ring reader's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A stack sample at ring offset `offset`: the kernel's user frames, leaf first, and the
    /// user stack when one was asked for and the sample has one.
    Sample {
        offset: u64,
        tid: u32,
        time: u64,
        ips: Vec<u64>,
        user: Option<UserStack<'a>>,
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
    /// Whether samples carry user registers and a stack copy.
    stack: bool,
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
    /// A kernel that refuses user stack sampling (`EINVAL`) gets an event without it: the
    /// frame-pointer callchain only.
    pub(crate) fn open(tid: u32, spec: &EventSpec) -> io::Result<Ring> {
        match Ring::open_as(tid, spec) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && stack_sampling(spec) => {
                let without = EventSpec {
                    stack_bytes: 0,
                    ..*spec
                };
                Ring::open_as(tid, &without)
            }
            opened => opened,
        }
    }

    fn open_as(tid: u32, spec: &EventSpec) -> io::Result<Ring> {
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
        let mut data_pages = spec.data_pages.max(1).next_power_of_two();
        let (ptr, map_len) = loop {
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
            if ptr != libc::MAP_FAILED {
                break (ptr, map_len);
            }
            let e = io::Error::last_os_error();
            // Past the locked-memory allowance (`perf_event_mlock_kb`, then RLIMIT_MEMLOCK):
            // a smaller ring, down to MIN_FALLBACK_PAGES, rather than no sampling.
            if e.raw_os_error() != Some(libc::EPERM) || data_pages <= MIN_FALLBACK_PAGES {
                return Err(e);
            }
            data_pages /= 2;
        };
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Ring {
            fd,
            base,
            map_len,
            page,
            data_size: page * data_pages,
            stack: stack_sampling(spec),
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
    pub(crate) fn drain(&self, head: u64, mut f: impl FnMut(Record<'_>) -> bool) {
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
                    parse_sample(tail, &scratch, self.stack)
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

/// Parses a sample's body: `tid`, `time`, the callchain, then (when `stack` sampling is on)
/// the user registers and the user stack copy, as `perf_event_open(2)` lays them out.
fn parse_sample(offset: u64, body: &[u8], stack: bool) -> Option<Record<'_>> {
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
    let user = if stack {
        parse_user_stack(body, 24 + 8 * nr)
    } else {
        None
    };
    Some(Record::Sample {
        offset,
        tid,
        time,
        ips,
        user,
    })
}

/// The registers and stack copy at `at`: `abi`, the registers when `abi` is not NONE, then
/// `size`, and when it is not 0, `size` bytes and `dyn_size` (how many of them are stack).
fn parse_user_stack(body: &[u8], at: usize) -> Option<UserStack<'_>> {
    let u64_at = |at: usize| -> Option<u64> {
        let bytes = body.get(at..at.checked_add(8)?)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        Some(u64::from_ne_bytes(b))
    };
    if u64_at(at)? == PERF_SAMPLE_REGS_ABI_NONE {
        return None;
    }
    let mut regs = [0u64; USER_REGS];
    for (i, reg) in regs.iter_mut().enumerate() {
        *reg = u64_at(at + 8 + 8 * i)?;
    }
    let at = at + 8 + 8 * USER_REGS;
    let size = usize::try_from(u64_at(at)?).ok()?;
    let data = at + 8;
    let dyn_size = match size {
        0 => 0,
        _ => usize::try_from(u64_at(data.checked_add(size)?)?).ok()?,
    };
    let bytes = body.get(data..data + size.min(dyn_size))?;
    Some(UserStack { regs, bytes })
}

/// Whether `spec` asks for user stacks and this architecture can unwind them.
fn stack_sampling(spec: &EventSpec) -> bool {
    USER_REGS_MASK != 0 && spec.stack_bytes > 0
}

fn open_event(tid: u32, spec: &EventSpec, user_only: bool) -> io::Result<OwnedFd> {
    let period_ns = 1_000_000_000 / u64::from(spec.frequency_hz.max(1));
    let mut flags = ATTR_EXCLUDE_HV | ATTR_EXCLUDE_CALLCHAIN_KERNEL;
    if user_only {
        flags |= ATTR_EXCLUDE_KERNEL;
    }
    let mut sample_type = PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CALLCHAIN;
    let (mut sample_regs_user, mut sample_stack_user) = (0, 0);
    if stack_sampling(spec) {
        sample_type |= PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER;
        sample_regs_user = USER_REGS_MASK;
        sample_stack_user = spec.stack_bytes.min(MAX_STACK_BYTES) & !7;
    }
    let attr = PerfEventAttr {
        sample_period: period_ns,
        sample_type,
        flags,
        sample_max_stack: spec.max_frames,
        sample_regs_user,
        sample_stack_user,
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
            parse_sample(64, &body, false),
            Some(Record::Sample {
                offset: 64,
                tid: 7,
                time: 99,
                ips: vec![0x1000, 0x2000],
                user: None,
            })
        );
        assert_eq!(parse_sample(0, &body[..20], false), None);
    }

    fn sample_with_stack(abi: u64, size: u64, stack: &[u8], dyn_size: u64) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&((7u64 << 32) | 7).to_ne_bytes());
        body.extend_from_slice(&99u64.to_ne_bytes());
        body.extend_from_slice(&1u64.to_ne_bytes());
        body.extend_from_slice(&0x4000u64.to_ne_bytes());
        body.extend_from_slice(&abi.to_ne_bytes());
        if abi != PERF_SAMPLE_REGS_ABI_NONE {
            for r in 0..USER_REGS as u64 {
                body.extend_from_slice(&(0x100 + r).to_ne_bytes());
            }
        }
        body.extend_from_slice(&size.to_ne_bytes());
        if size > 0 {
            body.extend_from_slice(stack);
            body.extend_from_slice(&dyn_size.to_ne_bytes());
        }
        body
    }

    #[test]
    fn parses_the_user_registers_and_the_used_part_of_the_stack_copy() {
        let stack: Vec<u8> = (0..32).collect();
        let body = sample_with_stack(2, 32, &stack, 24);
        let Some(Record::Sample { ips, user, .. }) = parse_sample(0, &body, true) else {
            panic!("a sample");
        };
        assert_eq!(ips, [0x4000]);
        let user = user.expect("a user stack");
        assert_eq!(user.bytes, &stack[..24]);
        assert_eq!(user.regs[0], 0x100);
        // No registers (a kernel thread's sample): the callchain alone.
        let body = sample_with_stack(PERF_SAMPLE_REGS_ABI_NONE, 0, &[], 0);
        assert!(matches!(
            parse_sample(0, &body, true),
            Some(Record::Sample { user: None, .. })
        ));
    }

    #[test]
    fn a_cut_or_lying_stack_record_never_reads_past_the_record() {
        let stack = [0u8; 32];
        // dyn_size larger than the copy: only the copy is used.
        let body = sample_with_stack(2, 32, &stack, 4096);
        let Some(Record::Sample { user, .. }) = parse_sample(0, &body, true) else {
            panic!("a sample");
        };
        assert_eq!(user.expect("user").bytes.len(), 32);
        // Every shorter body: no panic, and no stack from beyond the end.
        for cut in 0..body.len() {
            if let Some(Record::Sample { user: Some(u), .. }) = parse_sample(0, &body[..cut], true)
            {
                assert!(u.bytes.len() <= cut);
            }
        }
        // A size that overflows.
        let body = sample_with_stack(2, u64::MAX - 4, &[], 0);
        assert!(matches!(
            parse_sample(0, &body, true),
            Some(Record::Sample { user: None, .. })
        ));
    }
}
