//! Unwinding of copied user stacks, off the hot path: the sampler thread (or the sidecar's
//! profiler thread) turns a sample's registers and stack copy into a leaf-first callchain with
//! framehop, from each module's `.eh_frame` (indexed by `.eh_frame_hdr`) or `.debug_frame`,
//! falling back to frame pointers in a module without either.
//!
//! Invariants:
//! - One [`Unwinder`] serves one process (`pid`, 0 = this one). Its modules are the
//!   executable mappings of `/proc/<pid>/maps` (files read through `/proc/<pid>/root`, the
//!   vDSO from `/proc/<pid>/mem`); each module's unwind sections are read once and kept while
//!   the mapping stays (the per-module cache; [`Unwinder::info_bytes`] says its size). At most
//!   [`MAX_MODULES`] modules and [`MAX_UNWIND_INFO_BYTES`] of sections (each section at most
//!   `elf::MAX_SECTION`) are held; a module past the bytes gets frame pointers only.
//! - The maps are read again when an address falls outside every known module, at most once
//!   per [`REFRESH_EVERY`], so a library loaded later is found and JIT code (never in a
//!   module) costs one read of the maps a second at most.
//! - A stack that does not unwind to its root (the copy ended, unwind information was
//!   missing or wrong, or [`MAX_UNWOUND_FRAMES`] were reached) ends in [`TRUNCATED`]; it is
//!   never cut silently. A sample without a stack copy keeps the kernel's callchain.
//! - Unwinding reads only the copy: an address outside it is an error, never a memory read.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};

use super::elf;
use super::perf::UserStack;

/// The root entry of a callchain that did not unwind to its end (shown as `[truncated]`).
pub(crate) const TRUNCATED: u64 = u64::MAX;
/// Deepest callchain unwound; deeper is truncated.
pub const MAX_UNWOUND_FRAMES: usize = 512;
/// Fewest time between two reads of a process's maps.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Most modules followed; mappings past them are not unwound through (their frames end the
/// stack, marked truncated).
const MAX_MODULES: usize = 4096;
/// Most bytes of unwind sections held per process; modules loaded past it get frame pointers
/// only.
pub const MAX_UNWIND_INFO_BYTES: usize = 256 << 20;
/// Largest maps file read.
const MAX_MAPS_BYTES: u64 = 16 << 20;
/// Largest vDSO read.
const MAX_VDSO_BYTES: u64 = 1 << 20;

/// How the unwinding of the samples so far ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindCounts {
    /// Unwound to the stack's root.
    pub complete: u64,
    /// Ended early and marked [`TRUNCATED`].
    pub truncated: u64,
}

/// One loaded module: its mapping and how many bytes of unwind sections it holds.
#[derive(Debug)]
struct Loaded {
    end: u64,
    path: String,
    bytes: usize,
}

/// The unwinder of one process's stacks, with its modules' unwind information cached.
pub(crate) struct Unwinder {
    pid: u32,
    inner: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
    /// Executable mappings by start address.
    modules: HashMap<u64, Loaded>,
    refreshed: Option<Instant>,
    counts: UnwindCounts,
}

impl std::fmt::Debug for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinder")
            .field("pid", &self.pid)
            .field("modules", &self.modules.len())
            .field("counts", &self.counts)
            .finish()
    }
}

impl Unwinder {
    /// An unwinder for process `pid` (0 = this process); modules are read at the first
    /// sample.
    pub(crate) fn new(pid: u32) -> Unwinder {
        Unwinder {
            pid,
            inner: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            modules: HashMap::new(),
            refreshed: None,
            counts: UnwindCounts::default(),
        }
    }

    /// How the samples unwound so far ended.
    pub(crate) fn counts(&self) -> UnwindCounts {
        self.counts
    }

    /// Bytes of unwind sections held for the process's modules.
    pub(crate) fn info_bytes(&self) -> usize {
        self.modules.values().map(|m| m.bytes).sum()
    }

    /// The leaf-first callchain of a sample: unwound from `user` when there is one (ending
    /// in [`TRUNCATED`] when it did not reach the root), else `kernel` (the kernel's
    /// frame-pointer callchain) as it is.
    pub(crate) fn callchain(&mut self, kernel: Vec<u64>, user: Option<UserStack<'_>>) -> Vec<u64> {
        let Some(user) = user else {
            return kernel;
        };
        let [bp, sp, ip] = user.regs;
        if !self.covers(ip) {
            self.refresh();
        }
        let mut out = Vec::with_capacity(32);
        let mut complete = self.unwind(ip, sp, bp, user.bytes, &mut out);
        if !complete && out.iter().skip(1).any(|a| !self.covers(*a)) && self.refresh() {
            out.clear();
            complete = self.unwind(ip, sp, bp, user.bytes, &mut out);
        }
        if complete {
            self.counts.complete += 1;
        } else {
            self.counts.truncated += 1;
            out.push(TRUNCATED);
        }
        out
    }

    /// Unwinds into `out`; whether the root was reached.
    fn unwind(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8], out: &mut Vec<u64>) -> bool {
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let at = usize::try_from(addr.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
            let word = stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(word.try_into().map_err(|_| ())?))
        };
        let regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut frames = self
            .inner
            .iter_frames(ip, regs, &mut self.cache, &mut read_stack);
        loop {
            match frames.next() {
                Ok(Some(frame)) if out.len() < MAX_UNWOUND_FRAMES => out.push(frame.address()),
                Ok(Some(_)) | Err(_) => return false,
                Ok(None) => return true,
            }
        }
    }

    /// Whether `addr` lies in a known module.
    fn covers(&self, addr: u64) -> bool {
        self.modules
            .iter()
            .any(|(start, m)| (*start..m.end).contains(&addr))
    }

    /// Reads the maps again (unless that was done less than [`REFRESH_EVERY`] ago): adds the
    /// new executable mappings, drops the gone ones. Whether it read them.
    fn refresh(&mut self) -> bool {
        if self.refreshed.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
            return false;
        }
        self.refreshed = Some(Instant::now());
        let Some(maps) = read_maps(self.pid) else {
            return true;
        };
        let live: HashMap<u64, &Mapping> = maps.iter().map(|m| (m.start, m)).collect();
        let gone: Vec<u64> = self
            .modules
            .iter()
            .filter(|(start, m)| {
                live.get(start)
                    .is_none_or(|l| l.path != m.path || l.end != m.end)
            })
            .map(|(start, _)| *start)
            .collect();
        for start in gone {
            self.inner.remove_module(start);
            self.modules.remove(&start);
        }
        let mut held = self.info_bytes();
        for m in &maps {
            if self.modules.contains_key(&m.start) {
                continue;
            }
            if self.modules.len() >= MAX_MODULES {
                break;
            }
            let (module, bytes) = self.load(m, held < MAX_UNWIND_INFO_BYTES);
            held += bytes;
            self.inner.add_module(module);
            self.modules.insert(
                m.start,
                Loaded {
                    end: m.end,
                    path: m.path.clone(),
                    bytes,
                },
            );
        }
        true
    }

    /// The framehop module of mapping `m`, with the bytes of unwind data it holds. A file that
    /// cannot be read, or any file without `with_data`, gets a module without unwind data
    /// (frame pointers only).
    fn load(&self, m: &Mapping, with_data: bool) -> (Module<Vec<u8>>, usize) {
        let proc_dir = proc_dir(self.pid);
        let sections = if !with_data {
            None
        } else if m.path == "[vdso]" {
            read_vdso(&proc_dir, m)
        } else {
            std::fs::File::open(format!("{proc_dir}/root{}", m.path))
                .ok()
                .and_then(|f| elf::read(&f))
        };
        let Some(sections) = sections else {
            let info = ExplicitModuleSectionInfo::default();
            return (
                Module::new(m.path.clone(), m.start..m.end, m.start, info),
                0,
            );
        };
        let bytes = sections.data_len();
        let base_avma = base_avma(m, &sections.segments);
        let (eh_frame_svma, eh_frame) = sections.eh_frame.unzip();
        let (eh_frame_hdr_svma, eh_frame_hdr) = sections.eh_frame_hdr.unzip();
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: sections.text,
            got_svma: sections.got,
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            debug_frame: sections.debug_frame,
            ..ExplicitModuleSectionInfo::default()
        };
        (
            Module::new(m.path.clone(), m.start..m.end, base_avma, info),
            bytes,
        )
    }
}

/// `/proc/self` or `/proc/<pid>`.
fn proc_dir(pid: u32) -> String {
    match pid {
        0 => "/proc/self".to_owned(),
        pid => format!("/proc/{pid}"),
    }
}

/// An executable mapping of a file (or the vDSO).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

fn read_maps(pid: u32) -> Option<Vec<Mapping>> {
    let mut text = String::new();
    std::fs::File::open(format!("{}/maps", proc_dir(pid)))
        .ok()?
        .take(MAX_MAPS_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(parse_maps(&text))
}

/// The executable mappings of files and of the vDSO in a maps text.
fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let (_dev, _inode) = (fields.next()?, fields.next()?);
            let path = fields.next()?.trim_start();
            let (start, end) = range.split_once('-')?;
            let (start, end) = (
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            );
            let file = path.starts_with('/') && !path.ends_with(" (deleted)");
            (perms.as_bytes().get(2) == Some(&b'x') && start < end && (file || path == "[vdso]"))
                .then(|| Mapping {
                    start,
                    end,
                    offset,
                    path: path.to_owned(),
                })
        })
        .collect()
}

/// Where the image's address 0 is in the process: from the executable segment that holds the
/// mapping's file offset (`start - offset + p_offset - p_vaddr`), else `start - offset`.
fn base_avma(m: &Mapping, segments: &[elf::Segment]) -> u64 {
    let seg = segments
        .iter()
        .filter(|s| s.executable)
        .find(|s| {
            let page_start = s.offset & !0xfff;
            (page_start..s.offset.saturating_add(s.filesz).max(page_start + 1)).contains(&m.offset)
        })
        .or_else(|| segments.iter().find(|s| s.executable));
    let base = m.start.wrapping_sub(m.offset);
    match seg {
        Some(s) => base.wrapping_add(s.offset).wrapping_sub(s.vaddr),
        None => base,
    }
}

/// The vDSO's unwind sections, from a copy of its memory.
fn read_vdso(proc_dir: &str, m: &Mapping) -> Option<elf::UnwindSections> {
    let len = (m.end - m.start).min(MAX_VDSO_BYTES);
    let mem = std::fs::File::open(format!("{proc_dir}/mem")).ok()?;
    let image = elf::Source::read(&mem, m.start, len)?;
    elf::read(image.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_executable_file_and_vdso_mappings() {
        let text = "\
55d0c0a00000-55d0c0a2c000 r--p 00000000 08:01 1234 /usr/bin/app
55d0c0a2c000-55d0c0b00000 r-xp 0002c000 08:01 1234 /usr/bin/app
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
7f0000100000-7f0000200000 r-xp 00001000 08:01 99 /opt/lib with space.so
7f0000300000-7f0000400000 r-xp 00000000 08:01 98 /tmp/gone.so (deleted)
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]";
        let maps = parse_maps(text);
        let paths: Vec<&str> = maps.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["/usr/bin/app", "/opt/lib with space.so", "[vdso]"]);
        assert_eq!((maps[0].start, maps[0].offset), (0x55d0c0a2c000, 0x2c000));
    }

    #[test]
    fn the_base_address_comes_from_the_executable_segment() {
        let m = Mapping {
            start: 0x7f00_0000_1000,
            end: 0x7f00_0000_9000,
            offset: 0x1000,
            path: "/lib.so".into(),
        };
        let text = elf::Segment {
            offset: 0x1000,
            vaddr: 0x1000,
            filesz: 0x8000,
            executable: true,
        };
        assert_eq!(base_avma(&m, &[text]), 0x7f00_0000_0000);
        // A PIE linked at a nonzero address with the segment's offset and address apart.
        let shifted = elf::Segment {
            vaddr: 0x40_1000,
            ..text
        };
        assert_eq!(base_avma(&m, &[shifted]), 0x7f00_0000_0000 - 0x40_0000);
        assert_eq!(base_avma(&m, &[]), 0x7f00_0000_0000);
    }

    #[test]
    fn a_sample_without_a_stack_keeps_the_kernels_callchain() {
        let mut u = Unwinder::new(0);
        assert_eq!(u.callchain(vec![1, 2], None), [1, 2]);
        assert_eq!(u.counts(), UnwindCounts::default());
    }

    #[test]
    fn an_empty_stack_copy_is_marked_truncated_and_garbage_never_panics() {
        let mut u = Unwinder::new(0);
        let here =
            an_empty_stack_copy_is_marked_truncated_and_garbage_never_panics as *const () as u64;
        let chain = u.callchain(
            vec![],
            Some(UserStack {
                regs: [0, 0x1000, here],
                bytes: &[],
            }),
        );
        assert_eq!(chain.first(), Some(&here));
        assert_eq!(chain.last(), Some(&TRUNCATED));
        assert!(u.info_bytes() > 0, "this process's modules were read");
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        for ip in [0, 1, here, u64::MAX - 1] {
            let chain = u.callchain(
                vec![],
                Some(UserStack {
                    regs: [0x1234, 0x7fff_0000, ip],
                    bytes: &garbage,
                }),
            );
            assert!(chain.len() <= MAX_UNWOUND_FRAMES + 1);
        }
        assert_eq!(u.counts().complete + u.counts().truncated, 5);
    }
}
