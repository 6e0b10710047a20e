//! The few parts of an ELF file the unwinder needs: its loadable segments (to place it in a
//! process's address space) and the unwind sections (`.eh_frame`, `.eh_frame_hdr`,
//! `.debug_frame`) with the addresses of the sections their pointers are relative to
//! (`.text`, `.got`).
//!
//! Invariants: only 64-bit little-endian ELF is read (x86-64, aarch64); every offset and size
//! read from the file is checked against the file before it is used, so a damaged or hostile
//! file yields `None` or fewer sections, never a panic; a section's data is read only when it
//! is at most [`MAX_SECTION`] bytes, and compressed or `NOBITS` sections are not read.

use std::ops::Range;

/// Largest unwind section read (a huge binary's `.eh_frame` is a few MiB).
pub(crate) const MAX_SECTION: u64 = 64 << 20;
/// Largest program or section header table read.
const MAX_TABLE: u64 = 4 << 20;
/// Largest section header string table read.
const MAX_SHSTRTAB: u64 = 1 << 20;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const SHT_NOBITS: u32 = 8;
const SHF_COMPRESSED: u64 = 0x800;

/// Where to read an ELF image from: a file, or a copy of memory (the vDSO).
pub(crate) trait Source {
    /// `len` bytes at `offset`, or `None` when they are not all there.
    fn read(&self, offset: u64, len: u64) -> Option<Vec<u8>>;
}

impl Source for std::fs::File {
    fn read(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        self.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }
}

impl Source for [u8] {
    fn read(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.get(start..end).map(<[u8]>::to_vec)
    }
}

/// A loadable segment: file range and the address it is linked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) offset: u64,
    pub(crate) vaddr: u64,
    pub(crate) filesz: u64,
    pub(crate) executable: bool,
}

/// The unwind sections of one ELF image, with their linked (stated) addresses.
#[derive(Debug, Default)]
pub(crate) struct UnwindSections {
    pub(crate) segments: Vec<Segment>,
    pub(crate) text: Option<Range<u64>>,
    pub(crate) got: Option<Range<u64>>,
    pub(crate) eh_frame: Option<(Range<u64>, Vec<u8>)>,
    pub(crate) eh_frame_hdr: Option<(Range<u64>, Vec<u8>)>,
    pub(crate) debug_frame: Option<Vec<u8>>,
}

impl UnwindSections {
    /// Bytes of section data held.
    pub(crate) fn data_len(&self) -> usize {
        self.eh_frame.as_ref().map_or(0, |(_, d)| d.len())
            + self.eh_frame_hdr.as_ref().map_or(0, |(_, d)| d.len())
            + self.debug_frame.as_ref().map_or(0, Vec::len)
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A table of `count` entries of `size` bytes at `offset`, read whole; `None` when an entry is
/// smaller than `min` or the table is not in the file.
fn table(
    src: &(impl Source + ?Sized),
    offset: u64,
    size: u16,
    count: u16,
    min: u16,
) -> Option<Vec<u8>> {
    if count == 0 {
        return Some(Vec::new());
    }
    let len = u64::from(size) * u64::from(count);
    if size < min || len > MAX_TABLE {
        return None;
    }
    src.read(offset, len)
}

/// Reads the segments and unwind sections of the ELF image in `src`; `None` when it is not a
/// 64-bit little-endian ELF image.
pub(crate) fn read(src: &(impl Source + ?Sized)) -> Option<UnwindSections> {
    let header = src.read(0, 64)?;
    if header.get(..4)? != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let (phoff, shoff) = (u64_at(&header, 0x20)?, u64_at(&header, 0x28)?);
    let (phentsize, phnum) = (u16_at(&header, 0x36)?, u16_at(&header, 0x38)?);
    let (shentsize, shnum) = (u16_at(&header, 0x3a)?, u16_at(&header, 0x3c)?);
    let shstrndx = u16_at(&header, 0x3e)?;
    let mut out = UnwindSections::default();
    let phdrs = table(src, phoff, phentsize, phnum, 56)?;
    for ph in phdrs.chunks_exact(usize::from(phentsize.max(1))) {
        if u32_at(ph, 0)? != PT_LOAD {
            continue;
        }
        out.segments.push(Segment {
            executable: u32_at(ph, 4)? & PF_X != 0,
            offset: u64_at(ph, 8)?,
            vaddr: u64_at(ph, 16)?,
            filesz: u64_at(ph, 32)?,
        });
    }
    let Some(shdrs) = table(src, shoff, shentsize, shnum, 64) else {
        return Some(out);
    };
    let shdr = |i: usize| shdrs.get(i * usize::from(shentsize)..(i + 1) * usize::from(shentsize));
    let strtab = shdr(usize::from(shstrndx)).and_then(|sh| {
        let size = u64_at(sh, 32)?;
        (size <= MAX_SHSTRTAB).then_some(())?;
        src.read(u64_at(sh, 24)?, size)
    });
    let Some(strtab) = strtab else {
        return Some(out);
    };
    for i in 0..usize::from(shnum) {
        let Some(sh) = shdr(i) else { break };
        let (Some(name), Some(kind), Some(flags), Some(addr), Some(offset), Some(size)) = (
            u32_at(sh, 0),
            u32_at(sh, 4),
            u64_at(sh, 8),
            u64_at(sh, 16),
            u64_at(sh, 24),
            u64_at(sh, 32),
        ) else {
            continue;
        };
        let Some(name) = section_name(&strtab, name) else {
            continue;
        };
        let Some(range) = addr.checked_add(size).map(|end| addr..end) else {
            continue;
        };
        let data = || {
            let readable = kind != SHT_NOBITS && flags & SHF_COMPRESSED == 0 && size <= MAX_SECTION;
            readable.then(|| src.read(offset, size)).flatten()
        };
        match name {
            b".text" => out.text = Some(range),
            b".got" => out.got = Some(range),
            b".eh_frame" => out.eh_frame = data().map(|d| (range, d)),
            b".eh_frame_hdr" => out.eh_frame_hdr = data().map(|d| (range, d)),
            b".debug_frame" => out.debug_frame = data(),
            _ => {}
        }
    }
    Some(out)
}

/// The NUL-terminated name at `at` of the section header string table.
fn section_name(strtab: &[u8], at: u32) -> Option<&[u8]> {
    let rest = strtab.get(usize::try_from(at).ok()?..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binarys_unwind_sections() {
        let exe = std::env::current_exe().expect("exe");
        let file = std::fs::File::open(exe).expect("open");
        let elf = read(&file).expect("an ELF file");
        assert!(elf.segments.iter().any(|s| s.executable));
        let (range, data) = elf.eh_frame.as_ref().expect(".eh_frame");
        assert_eq!(range.end - range.start, data.len() as u64);
        assert!(elf.eh_frame_hdr.is_some() && elf.text.is_some());
        assert!(elf.data_len() >= data.len());
    }

    #[test]
    fn damaged_images_never_panic() {
        let exe = std::env::current_exe().expect("exe");
        let bytes = std::fs::read(exe).expect("read");
        let head = &bytes[..bytes.len().min(64 * 1024)];
        assert!(read(b"not an elf file".as_slice()).is_none());
        for cut in [0, 4, 63, 64, 65, 200, 4096] {
            let _ = read(&head[..cut.min(head.len())]);
        }
        // Flip bytes of the headers one at a time: whatever comes out, no panic.
        let mut copy = head.to_vec();
        for at in 0..copy.len().min(512) {
            let old = copy[at];
            copy[at] = 0xff;
            let _ = read(copy.as_slice());
            copy[at] = old;
        }
    }
}
