//! The `perf_event_open` system call and `struct perf_event_attr`: the one place that calls it,
//! for the CPU counters (`counters`) and the stack sampler (`sampler::perf`).
//!
//! The struct is `PERF_ATTR_SIZE_VER5` (112 bytes). The kernel reads `size` bytes of it and
//! accepts a struct larger than it knows as long as the bytes it does not know are zero, which
//! `Default` guarantees.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub(crate) const PERF_TYPE_HARDWARE: u32 = 0;
pub(crate) const PERF_TYPE_SOFTWARE: u32 = 1;
/// `attr.flags` bits.
pub(crate) const ATTR_EXCLUDE_KERNEL: u64 = 1 << 5;
pub(crate) const ATTR_EXCLUDE_HV: u64 = 1 << 6;
pub(crate) const ATTR_EXCLUDE_CALLCHAIN_KERNEL: u64 = 1 << 21;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `struct perf_event_attr` up to `sample_max_stack` (`PERF_ATTR_SIZE_VER5`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PerfEventAttr {
    pub type_: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub config1: u64,
    pub config2: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub reserved_2: u16,
}

const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 112);

impl PerfEventAttr {
    /// An attribute of `type_`/`config` with `size` filled in and everything else zero.
    pub(crate) fn new(type_: u32, config: u64) -> PerfEventAttr {
        PerfEventAttr {
            type_,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config,
            ..PerfEventAttr::default()
        }
    }
}

/// Opens a perf event on thread `tid` (0: the calling thread), any CPU, in no group,
/// close-on-exec.
pub(crate) fn perf_event_open(attr: &PerfEventAttr, tid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a properly sized, initialised `perf_event_attr` whose `size` field says
    // how many bytes the kernel may read; it outlives the call. cpu -1 means any CPU, group_fd
    // -1 no group; the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            tid,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
