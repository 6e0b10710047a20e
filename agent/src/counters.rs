//! Per-thread CPU counters: `perf_event_open` where the kernel allows it, else
//! `CLOCK_THREAD_CPUTIME_ID`.
//!
//! Invariants:
//! - Counters are per thread (`pid = 0, cpu = -1`), opened lazily the first time a thread reads
//!   them, and closed (and unmapped) when the thread exits. A [`Sample`] is only ever subtracted
//!   from a later sample taken *on the same thread* with the same [`CounterMode`]; callers
//!   (scopes, instrumented futures) guarantee that by sampling around one synchronous stretch.
//! - `cpu_ns` is always available; `instructions` is `Some` only where the CPU (or VM) exposes
//!   a hardware instruction counter to user space, and only for a delta during which the
//!   counter was never multiplexed out (otherwise the count would be short).
//! - With a hardware counter, the thread's CPU time is that event's `time_enabled`: for a
//!   per-thread event it advances exactly while the thread is on a CPU, i.e. it is task-clock,
//!   and one `read()` (or one rdpmc sequence) yields both numbers consistently. Without one,
//!   a software task-clock event counts the thread's CPU time. Either counts user and kernel
//!   time; instructions count user space only (`exclude_kernel`, `exclude_hv`).
//! - The mmap fast path (rdpmc + TSC) is used only when the event's mmap page advertises both
//!   `cap_user_rdpmc` and `cap_user_time`, and a sample falls back to `read()` whenever the
//!   page says the event is not on a hardware counter at that instant (`index == 0`).
//! - When `perf_event_open` fails (seccomp, `perf_event_paranoid`, no PMU), the fallback to
//!   `CLOCK_THREAD_CPUTIME_ID` is logged once per process.
//!
//! Its `unsafe` (the syscall itself is `perf_sys`'s): `read()`,
//! `mmap`/`munmap` of the event page, volatile reads of that page, `rdpmc`/`rdtsc`, and
//! `clock_gettime`. Each block says why it is sound.

#![allow(unsafe_code)]

use std::cell::OnceCell;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Once;

use crate::perf_sys::{
    self, PerfEventAttr, ATTR_EXCLUDE_HV, ATTR_EXCLUDE_KERNEL, PERF_TYPE_HARDWARE,
    PERF_TYPE_SOFTWARE,
};

/// Which counters a thread may use. Set per agent ([`crate::Config::counters`]) or with the
/// `PROFWATCH_COUNTERS` environment variable (`auto`, `read`, `clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterMode {
    /// The fastest path this thread gets: rdpmc, else `read()`, else `clock_gettime`.
    #[default]
    Auto,
    /// `perf_event_open` counters read with `read()` (never rdpmc); else `clock_gettime`.
    Read,
    /// Only `CLOCK_THREAD_CPUTIME_ID`: no perf events, no instructions.
    Clock,
}

impl CounterMode {
    /// Parses `auto`, `read` or `clock` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(CounterMode::Auto),
            "read" | "perf" => Some(CounterMode::Read),
            "clock" => Some(CounterMode::Clock),
            _ => None,
        }
    }
}

/// How a thread's counters are actually read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterPath {
    /// The perf mmap page: `rdpmc` for instructions and the TSC for time; no syscall.
    Rdpmc,
    /// `read()` of the perf event file descriptor: one syscall per sample.
    Read,
    /// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: one syscall per sample, no instructions.
    ClockGettime,
}

impl fmt::Display for CounterPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CounterPath::Rdpmc => "rdpmc (perf mmap page)",
            CounterPath::Read => "read() of a perf event fd",
            CounterPath::ClockGettime => "clock_gettime(CLOCK_THREAD_CPUTIME_ID)",
        })
    }
}

/// The thread's cumulative counters at one instant. Only differences between two samples of
/// the same thread mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// CPU time of this thread.
    pub cpu_ns: u64,
    /// User-space instructions retired by this thread, if a hardware counter exists.
    pub instructions: Option<u64>,
    /// Time the instruction counter was actually counting (equals `cpu_ns` unless it was
    /// multiplexed out); used to refuse short instruction counts.
    running_ns: u64,
}

/// The cost between two samples of one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delta {
    pub cpu_ns: u64,
    /// `None` when no hardware counter exists or it was multiplexed out in between.
    pub instructions: Option<u64>,
}

impl Sample {
    /// The cost from `self` to `later` (both from the same thread and mode).
    pub fn until(&self, later: &Sample) -> Delta {
        let cpu_ns = later.cpu_ns.saturating_sub(self.cpu_ns);
        let running = later.running_ns.saturating_sub(self.running_ns);
        let instructions = match (self.instructions, later.instructions) {
            (Some(a), Some(b)) if running == cpu_ns => Some(b.saturating_sub(a)),
            _ => None,
        };
        Delta {
            cpu_ns,
            instructions,
        }
    }
}

/// What this thread's counters turned out to be, for reports and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The path [`CounterMode::Auto`] uses on this thread.
    pub path: CounterPath,
    /// Whether a hardware instruction counter is open.
    pub instructions: bool,
    /// `cap_user_rdpmc` of the hardware event's mmap page (false without one).
    pub cap_user_rdpmc: bool,
    /// `cap_user_time` of the event's mmap page.
    pub cap_user_time: bool,
    /// Why perf counters could not be opened, if they could not.
    pub perf_error: Option<String>,
    /// Why the hardware instruction counter could not be opened, if it could not.
    pub instructions_error: Option<String>,
}

/// Reads this thread's counters under `mode`. Cheap after the first call on a thread.
#[inline]
pub fn read(mode: CounterMode) -> Sample {
    if mode == CounterMode::Clock {
        return clock_sample();
    }
    PERF.with(|cell| match cell.get_or_init(open_logged) {
        Ok(group) => group.read(mode == CounterMode::Auto),
        Err(_) => clock_sample(),
    })
}

/// The path `mode` takes on the calling thread (opening its counters if need be).
pub fn active_path(mode: CounterMode) -> CounterPath {
    if mode == CounterMode::Clock {
        return CounterPath::ClockGettime;
    }
    PERF.with(|cell| match cell.get_or_init(open_logged) {
        Ok(group) if mode == CounterMode::Auto && group.fast.is_some() => CounterPath::Rdpmc,
        Ok(_) => CounterPath::Read,
        Err(_) => CounterPath::ClockGettime,
    })
}

/// Describes the calling thread's counters.
pub fn probe() -> Probe {
    PERF.with(|cell| match cell.get_or_init(open_logged) {
        Ok(group) => Probe {
            path: active_path(CounterMode::Auto),
            instructions: group.has_instructions,
            cap_user_rdpmc: group.caps.rdpmc,
            cap_user_time: group.caps.time,
            perf_error: None,
            instructions_error: group.instructions_error.clone(),
        },
        Err(e) => Probe {
            path: CounterPath::ClockGettime,
            instructions: false,
            cap_user_rdpmc: false,
            cap_user_time: false,
            perf_error: Some(e.clone()),
            instructions_error: None,
        },
    })
}

thread_local! {
    static PERF: OnceCell<Result<PerfGroup, String>> = const { OnceCell::new() };
}

static FALLBACK_LOGGED: Once = Once::new();
static NO_INSTRUCTIONS_LOGGED: Once = Once::new();

fn open_logged() -> Result<PerfGroup, String> {
    match PerfGroup::open() {
        Ok(group) => {
            if let Some(why) = &group.instructions_error {
                NO_INSTRUCTIONS_LOGGED.call_once(|| {
                    tracing::info!(
                        "profwatch: no hardware instruction counter ({why}); \
                         events carry cpu_ns only, counted by perf task-clock"
                    );
                });
            }
            Ok(group)
        }
        Err(e) => {
            let why = e.to_string();
            FALLBACK_LOGGED.call_once(|| {
                tracing::warn!(
                    "profwatch: perf_event_open failed ({why}); counting CPU with \
                     CLOCK_THREAD_CPUTIME_ID, without instructions"
                );
            });
            Err(why)
        }
    }
}

fn clock_sample() -> Sample {
    let ns = thread_cpu_ns();
    Sample {
        cpu_ns: ns,
        instructions: None,
        running_ns: ns,
    }
}

/// `CLOCK_THREAD_CPUTIME_ID` in nanoseconds (0 if the clock is unavailable, which Linux never
/// does for the calling thread).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; the clock id is
    // a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

// ---- perf_event_open ---------------------------------------------------------------------

const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1 << 0;
const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 1 << 1;

/// A counting event on the calling thread that reports how long it was enabled and running.
fn perf_event_open(type_: u32, config: u64, flags: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        read_format: PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING,
        flags,
        ..PerfEventAttr::new(type_, config)
    };
    perf_sys::perf_event_open(&attr, 0)
}

#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    rdpmc: bool,
    time: bool,
}

/// One thread's open counter: the hardware instruction event if there is one, else task-clock.
struct PerfGroup {
    fd: OwnedFd,
    has_instructions: bool,
    instructions_error: Option<String>,
    caps: Caps,
    /// The mmap fast path, present only with `cap_user_rdpmc && cap_user_time`.
    fast: Option<MmapPage>,
}

impl PerfGroup {
    fn open() -> io::Result<PerfGroup> {
        match perf_event_open(
            PERF_TYPE_HARDWARE,
            PERF_COUNT_HW_INSTRUCTIONS,
            ATTR_EXCLUDE_KERNEL | ATTR_EXCLUDE_HV,
        ) {
            Ok(fd) => {
                let page = MmapPage::map(&fd).ok();
                let caps = page.as_ref().map(MmapPage::caps).unwrap_or_default();
                let fast = page.filter(|_| caps.rdpmc && caps.time && cfg!(target_arch = "x86_64"));
                Ok(PerfGroup {
                    fd,
                    has_instructions: true,
                    instructions_error: None,
                    caps,
                    fast,
                })
            }
            Err(hw) => {
                // task-clock counts time, so kernel time is part of it; where the paranoia
                // level forbids that, `exclude_kernel` is required but changes nothing here.
                let fd = perf_event_open(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK, 0).or_else(
                    |_| {
                        perf_event_open(
                            PERF_TYPE_SOFTWARE,
                            PERF_COUNT_SW_TASK_CLOCK,
                            ATTR_EXCLUDE_KERNEL,
                        )
                    },
                )?;
                let caps = MmapPage::map(&fd).map(|p| p.caps()).unwrap_or_default();
                Ok(PerfGroup {
                    fd,
                    has_instructions: false,
                    instructions_error: Some(hw.to_string()),
                    caps,
                    fast: None,
                })
            }
        }
    }

    #[inline]
    fn read(&self, allow_fast: bool) -> Sample {
        if allow_fast {
            if let Some(sample) = self.fast.as_ref().and_then(MmapPage::sample) {
                return sample;
            }
        }
        self.read_syscall()
    }

    #[inline]
    fn read_syscall(&self) -> Sample {
        // value, time_enabled, time_running (read_format without PERF_FORMAT_GROUP).
        let mut buf = [0u64; 3];
        // SAFETY: `buf` is writable for `size_of_val(&buf)` bytes and the fd is a perf event
        // we own; the kernel writes at most that many bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                std::mem::size_of_val(&buf),
            )
        };
        if n != std::mem::size_of_val(&buf) as isize {
            return clock_sample();
        }
        let [value, enabled, running] = buf;
        if self.has_instructions {
            Sample {
                cpu_ns: enabled,
                instructions: Some(value),
                running_ns: running,
            }
        } else {
            Sample {
                cpu_ns: value,
                instructions: None,
                running_ns: value,
            }
        }
    }
}

impl fmt::Debug for PerfGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerfGroup")
            .field("fd", &self.fd)
            .field("has_instructions", &self.has_instructions)
            .field("fast", &self.fast.is_some())
            .finish()
    }
}

// ---- the mmap page -------------------------------------------------------------------------

/// Offsets in `struct perf_event_mmap_page` (include/uapi/linux/perf_event.h).
mod page {
    pub const LOCK: usize = 8;
    pub const INDEX: usize = 12;
    pub const OFFSET: usize = 16;
    pub const TIME_ENABLED: usize = 24;
    pub const TIME_RUNNING: usize = 32;
    pub const CAPABILITIES: usize = 40;
    pub const PMC_WIDTH: usize = 48;
    pub const TIME_SHIFT: usize = 50;
    pub const TIME_MULT: usize = 52;
    pub const TIME_OFFSET: usize = 56;
    pub const CAP_USER_RDPMC: u64 = 1 << 2;
    pub const CAP_USER_TIME: u64 = 1 << 3;
}

/// The first page of a perf event's mmap area, read-only, unmapped on drop.
struct MmapPage {
    base: *const u8,
    len: usize,
}

impl MmapPage {
    fn map(fd: &OwnedFd) -> io::Result<MmapPage> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("no page size"))?;
        // SAFETY: mapping one page of a perf event fd read-only and shared is what the perf
        // ABI offers; we pass a null hint, so no existing mapping is replaced.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MmapPage {
            base: base.cast::<u8>().cast_const(),
            len,
        })
    }

    /// A volatile read of the field at `offset`: the kernel rewrites the page concurrently.
    #[inline]
    fn field<T: Copy>(&self, offset: usize) -> T {
        debug_assert!(offset + std::mem::size_of::<T>() <= self.len);
        // SAFETY: `base..base+len` is a live read-only mapping for as long as `self` lives, the
        // offsets are the ABI's naturally aligned field offsets within its first 96 bytes, and
        // every bit pattern is a valid integer.
        unsafe { std::ptr::read_volatile(self.base.add(offset).cast::<T>()) }
    }

    fn caps(&self) -> Caps {
        let caps: u64 = self.field(page::CAPABILITIES);
        Caps {
            rdpmc: caps & page::CAP_USER_RDPMC != 0,
            time: caps & page::CAP_USER_TIME != 0,
        }
    }

    /// The self-monitoring read from `perf_event.h`, under the page's seqlock. `None` when the
    /// event is not on a hardware counter right now (the caller then uses `read()`).
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn sample(&self) -> Option<Sample> {
        use std::sync::atomic::{compiler_fence, Ordering};
        loop {
            let seq: u32 = self.field(page::LOCK);
            compiler_fence(Ordering::SeqCst);
            let index: u32 = self.field(page::INDEX);
            if index == 0 {
                return None;
            }
            let offset: i64 = self.field(page::OFFSET);
            let enabled: u64 = self.field(page::TIME_ENABLED);
            let running: u64 = self.field(page::TIME_RUNNING);
            let width: u16 = self.field(page::PMC_WIDTH);
            let shift: u16 = self.field(page::TIME_SHIFT);
            let mult: u32 = self.field(page::TIME_MULT);
            let time_offset: u64 = self.field(page::TIME_OFFSET);
            // SAFETY: rdtsc has no preconditions; cap_user_time said the TSC is usable.
            let cyc = unsafe { std::arch::x86_64::_rdtsc() };
            let pmc = rdpmc(index - 1);
            compiler_fence(Ordering::SeqCst);
            let again: u32 = self.field(page::LOCK);
            if again != seq {
                continue;
            }
            let width = u32::from(width.clamp(1, 64));
            let pmc = (pmc << (64 - width)) as i64 >> (64 - width);
            let count = offset.wrapping_add(pmc) as u64;
            let shift = u32::from(shift.min(63));
            let quot = cyc >> shift;
            let rem = cyc & ((1u64 << shift) - 1);
            let delta = time_offset
                .wrapping_add(quot.wrapping_mul(u64::from(mult)))
                .wrapping_add(rem.wrapping_mul(u64::from(mult)) >> shift);
            return Some(Sample {
                cpu_ns: enabled.wrapping_add(delta),
                instructions: Some(count),
                running_ns: running.wrapping_add(delta),
            });
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn sample(&self) -> Option<Sample> {
        None
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdpmc(counter: u32) -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: only called with the index the mmap page published while `cap_user_rdpmc` was
    // set, which is exactly when the kernel has enabled user-space rdpmc (CR4.PCE) for this
    // task; rdpmc touches no memory.
    unsafe {
        std::arch::asm!(
            "rdpmc",
            in("ecx") counter,
            out("eax") lo,
            out("edx") hi,
            options(nostack, nomem, preserves_flags),
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

impl Drop for MmapPage {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping `map` created, unmapped only here.
        unsafe {
            libc::munmap(self.base.cast_mut().cast::<libc::c_void>(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin_ns(ns: u64) {
        let start = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() - start < ns {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn every_mode_counts_cpu_time() {
        for mode in [CounterMode::Auto, CounterMode::Read, CounterMode::Clock] {
            let a = read(mode);
            spin_ns(20_000_000);
            let d = a.until(&read(mode));
            assert!(
                (18_000_000..40_000_000).contains(&d.cpu_ns),
                "{mode:?} ({}): {d:?}",
                active_path(mode)
            );
        }
    }

    #[test]
    fn clock_mode_never_has_instructions() {
        assert_eq!(active_path(CounterMode::Clock), CounterPath::ClockGettime);
        let a = read(CounterMode::Clock);
        assert_eq!(a.until(&read(CounterMode::Clock)).instructions, None);
    }

    #[test]
    fn probe_agrees_with_active_path() {
        let p = probe();
        assert_eq!(p.path, active_path(CounterMode::Auto));
        assert_eq!(
            p.instructions,
            read(CounterMode::Read).instructions.is_some()
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(CounterMode::parse("CLOCK"), Some(CounterMode::Clock));
        assert_eq!(CounterMode::parse("read"), Some(CounterMode::Read));
        assert_eq!(CounterMode::parse("auto"), Some(CounterMode::Auto));
        assert_eq!(CounterMode::parse("fast"), None);
    }
}
