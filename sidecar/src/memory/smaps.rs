//! `/proc/PID/smaps_rollup` and `/proc/PID/smaps` read into [`MemoryBytes`].
//!
//! Both files are lines of `Key:   N kB` (smaps has a header line per mapping before its
//! fields); the rollup holds each field once, smaps once per mapping, so one parser sums every
//! occurrence of the fields we keep (Rss, Pss, Shared_Clean, Shared_Dirty, Private_Clean,
//! Private_Dirty, Swap) and ignores every other line.
//!
//! Invariants: input is read as a stream, one line at a time; a line longer than
//! [`MAX_LINE`] or a file longer than its cap is an error, never a partial answer; a kept
//! field whose value is not `N kB` or whose sum overflows is an error; nothing here panics on
//! any input.

use std::io::{self, BufRead, Read};
use std::path::Path;

use profwatch_model::memory::MemoryBytes;

/// Longest line accepted: a mapping's header line holds a path (up to `PATH_MAX`, 4096 bytes).
pub const MAX_LINE: usize = 8 << 10;
/// Largest `smaps_rollup` accepted (a few hundred bytes in practice).
pub const MAX_ROLLUP_BYTES: u64 = 64 << 10;
/// Largest `smaps` accepted: about 65k mappings (the kernel's default `max_map_count`) of
/// about 1 KiB each, with room to spare.
pub const MAX_SMAPS_BYTES: u64 = 256 << 20;

/// Which file a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rollup,
    /// `smaps`, summed, where the kernel has no `smaps_rollup` (before 4.14).
    Smaps,
}

/// Why a process's memory could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmapsError {
    /// The process does not exist (any more), or holds no memory (a zombie, a kernel thread).
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("line {line} is longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
    #[error("the file is longer than {max} bytes")]
    TooLarge { max: u64 },
    #[error("line {line}: `{field}` is not `N kB`")]
    BadValue { line: usize, field: &'static str },
    #[error("the sum of `{field}` overflows")]
    Overflow { field: &'static str },
    #[error("no `Rss:` line: not an smaps file")]
    NoFields,
}

impl SmapsError {
    /// Whether the process simply is not there to read (exited, or never had memory).
    pub fn is_gone(&self) -> bool {
        matches!(self, SmapsError::Gone { .. })
    }
}

/// The smaps keys we keep, in the order of [`MemoryBytes`]'s fields.
const KEYS: [&str; 7] = [
    "Rss",
    "Pss",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Swap",
];

/// Sums the kept fields of smaps-format text read from `input`, at most `max_bytes` of it.
pub fn parse(input: impl BufRead, max_bytes: u64) -> Result<MemoryBytes, SmapsError> {
    // One byte more than allowed, so a file of exactly `max_bytes` is accepted and a longer
    // one is seen to be longer.
    let mut input = input.take(max_bytes.saturating_add(1));
    let mut sums = [0u64; 7];
    let mut seen_rss = false;
    let mut total: u64 = 0;
    let mut buf = Vec::with_capacity(256);
    for line in 1usize.. {
        buf.clear();
        let n = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| SmapsError::Io {
                path: "input".into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return Err(SmapsError::TooLarge { max: max_bytes });
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if text.len() > MAX_LINE || (n > MAX_LINE && !buf.ends_with(b"\n")) {
            return Err(SmapsError::LineTooLong { line });
        }
        let Some((index, value)) = field(text) else {
            continue;
        };
        let name = KEYS[index];
        let bytes = kilobytes(value)
            .ok_or(SmapsError::BadValue { line, field: name })?
            .checked_mul(1024)
            .ok_or(SmapsError::Overflow { field: name })?;
        sums[index] = sums[index]
            .checked_add(bytes)
            .ok_or(SmapsError::Overflow { field: name })?;
        seen_rss |= index == 0;
    }
    if !seen_rss {
        return Err(SmapsError::NoFields);
    }
    let [rss, pss, shared_clean, shared_dirty, private_clean, private_dirty, swap] = sums;
    Ok(MemoryBytes {
        rss,
        pss,
        shared_clean,
        shared_dirty,
        private_clean,
        private_dirty,
        swap,
    })
}

/// A kept field's index and the text after its `Key:`; `None` for every other line.
fn field(line: &[u8]) -> Option<(usize, &[u8])> {
    let colon = line.iter().position(|b| *b == b':')?;
    let key = &line[..colon];
    let index = KEYS.iter().position(|k| k.as_bytes() == key)?;
    Some((index, &line[colon + 1..]))
}

/// `   123 kB` → 123.
fn kilobytes(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut words = text.split_ascii_whitespace();
    let (number, unit) = (words.next()?, words.next()?);
    if unit != "kB" || words.next().is_some() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// Reads process `pid`'s memory from `proc` (`/proc`, or a copy of it in tests): its
/// `smaps_rollup`, else the sum of its `smaps`.
pub fn read(proc: &Path, pid: u32) -> Result<(MemoryBytes, Source), SmapsError> {
    let dir = proc.join(pid.to_string());
    match read_file(&dir.join("smaps_rollup"), pid, MAX_ROLLUP_BYTES) {
        Err(SmapsError::Io { source, .. })
            if source.kind() == io::ErrorKind::NotFound && dir.is_dir() =>
        {
            read_file(&dir.join("smaps"), pid, MAX_SMAPS_BYTES).map(|b| (b, Source::Smaps))
        }
        read => read.map(|b| (b, Source::Rollup)),
    }
}

fn read_file(path: &Path, pid: u32, max_bytes: u64) -> Result<MemoryBytes, SmapsError> {
    let gone_or = |source: io::Error| {
        // ESRCH: the process exited while it was read.
        if source.raw_os_error() == Some(3) || !path.parent().is_some_and(Path::is_dir) {
            SmapsError::Gone { pid }
        } else {
            SmapsError::Io {
                path: path.display().to_string(),
                source,
            }
        }
    };
    let file = std::fs::File::open(path).map_err(gone_or)?;
    let mut reader = io::BufReader::new(file);
    // A zombie's or a kernel thread's file is empty.
    if reader.fill_buf().map_err(gone_or)?.is_empty() {
        return Err(SmapsError::Gone { pid });
    }
    parse(reader, max_bytes).map_err(|e| match e {
        SmapsError::Io { source, .. } => gone_or(source),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ROLLUP: &str = "\
55821b035000-7ffe6bc4e000 ---p 00000000 00:00 0                          [rollup]
Rss:                1696 kB
Pss:                 327 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Pss_File:            215 kB
Pss_Shmem:             0 kB
Shared_Clean:       1536 kB
Shared_Dirty:          0 kB
Private_Clean:        48 kB
Private_Dirty:       112 kB
Referenced:         1696 kB
Anonymous:           112 kB
Swap:                  8 kB
SwapPss:               4 kB
Locked:                0 kB
";

    const SMAPS: &str = "\
55821b035000-55821b037000 r--p 00000000 08:01 1234                       /usr/bin/cat
Size:                  8 kB
KernelPageSize:        4 kB
Rss:                   8 kB
Pss:                   4 kB
Shared_Clean:          8 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Swap:                  0 kB
VmFlags: rd mr mw me dw sd
7ffe6bc2d000-7ffe6bc4e000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  16 kB
Pss:                  16 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         4 kB
Private_Dirty:        12 kB
Swap:                  4 kB
THPeligible:    0
VmFlags: rd wr mr mw me gd ac
";

    fn kib(n: u64) -> u64 {
        n * 1024
    }

    #[test]
    fn a_rollup_reads_its_fields() {
        let b = parse(ROLLUP.as_bytes(), MAX_ROLLUP_BYTES).expect("parse");
        assert_eq!(
            b,
            MemoryBytes {
                rss: kib(1696),
                pss: kib(327),
                shared_clean: kib(1536),
                shared_dirty: 0,
                private_clean: kib(48),
                private_dirty: kib(112),
                swap: kib(8),
            }
        );
    }

    #[test]
    fn smaps_sums_every_mapping() {
        let b = parse(SMAPS.as_bytes(), MAX_SMAPS_BYTES).expect("parse");
        assert_eq!(
            b,
            MemoryBytes {
                rss: kib(24),
                pss: kib(20),
                shared_clean: kib(8),
                shared_dirty: 0,
                private_clean: kib(4),
                private_dirty: kib(12),
                swap: kib(4),
            }
        );
    }

    #[test]
    fn bad_input_is_an_error_naming_it() {
        let bad_value = ROLLUP.replace("Pss:                 327 kB", "Pss: 327 MB");
        assert!(matches!(
            parse(bad_value.as_bytes(), MAX_ROLLUP_BYTES),
            Err(SmapsError::BadValue {
                line: 3,
                field: "Pss"
            })
        ));
        let negative = ROLLUP.replace("Swap:                  8 kB", "Swap: -8 kB");
        assert!(matches!(
            parse(negative.as_bytes(), MAX_ROLLUP_BYTES),
            Err(SmapsError::BadValue { field: "Swap", .. })
        ));
        let huge = format!("Rss: {} kB\nRss: {} kB\n", u64::MAX / 1024, u64::MAX / 1024);
        assert!(matches!(
            parse(huge.as_bytes(), MAX_ROLLUP_BYTES),
            Err(SmapsError::Overflow { field: "Rss" })
        ));
        let too_many_digits = format!("Rss: {} kB\n", "9".repeat(40));
        assert!(parse(too_many_digits.as_bytes(), MAX_ROLLUP_BYTES).is_err());
        assert!(matches!(
            parse("VmFlags: rd\n".as_bytes(), MAX_ROLLUP_BYTES),
            Err(SmapsError::NoFields)
        ));
        assert!(matches!(
            parse(&b""[..], MAX_ROLLUP_BYTES),
            Err(SmapsError::NoFields)
        ));
    }

    #[test]
    fn long_lines_and_long_files_are_refused() {
        let long_line = format!("Rss: 1 kB\n{}\n", "x".repeat(MAX_LINE + 1));
        assert!(matches!(
            parse(long_line.as_bytes(), MAX_SMAPS_BYTES),
            Err(SmapsError::LineTooLong { line: 2 })
        ));
        let no_newline = "x".repeat(MAX_LINE * 3);
        assert!(matches!(
            parse(no_newline.as_bytes(), MAX_SMAPS_BYTES),
            Err(SmapsError::LineTooLong { line: 1 })
        ));
        let exactly = ROLLUP.len() as u64;
        assert!(parse(ROLLUP.as_bytes(), exactly).is_ok());
        assert!(matches!(
            parse(ROLLUP.as_bytes(), exactly - 1),
            Err(SmapsError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_rollup_is_read_and_smaps_is_the_fallback() {
        let proc = tempfile::tempdir().expect("tempdir");
        let with_rollup = proc.path().join("10");
        std::fs::create_dir(&with_rollup).expect("mkdir");
        std::fs::write(with_rollup.join("smaps_rollup"), ROLLUP).expect("write");
        std::fs::write(with_rollup.join("smaps"), SMAPS).expect("write");
        let (b, source) = read(proc.path(), 10).expect("rollup");
        assert_eq!((b.rss, source), (kib(1696), Source::Rollup));

        let old_kernel = proc.path().join("11");
        std::fs::create_dir(&old_kernel).expect("mkdir");
        std::fs::write(old_kernel.join("smaps"), SMAPS).expect("write");
        let (b, source) = read(proc.path(), 11).expect("smaps");
        assert_eq!((b.rss, source), (kib(24), Source::Smaps));

        let zombie = proc.path().join("12");
        std::fs::create_dir(&zombie).expect("mkdir");
        std::fs::write(zombie.join("smaps_rollup"), "").expect("write");
        assert!(read(proc.path(), 12).expect_err("empty").is_gone());
        assert!(read(proc.path(), 13).expect_err("no such pid").is_gone());
    }

    #[test]
    fn this_process_reads_as_itself() {
        let (b, _) = read(Path::new("/proc"), std::process::id()).expect("read self");
        assert!(b.rss > 0 && b.pss > 0 && b.pss <= b.rss, "{b:?}");
        assert!(b.private() + b.shared() <= b.rss + 4096, "{b:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes: no panic, and an answer never claims more than the lines could say.
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(bytes.as_slice(), 1024);
        }

        /// Any mix of kept fields, other lines and headers sums to the kept values.
        #[test]
        fn kept_fields_sum(lines in proptest::collection::vec((0usize..9, 0u64..1 << 30), 1..50)) {
            let mut text = String::from("Rss: 0 kB\n");
            let mut want = [0u64; 7];
            for (which, value) in &lines {
                match KEYS.get(*which) {
                    Some(key) => {
                        text.push_str(&format!("{key}:   {value} kB\n"));
                        want[*which] += value * 1024;
                    }
                    None if *which == 7 => text.push_str(&format!("Pss_Anon: {value} kB\n")),
                    None => text.push_str("7f00-7f01 rw-p 00000000 00:00 0  [heap]\n"),
                }
            }
            let b = parse(text.as_bytes(), MAX_SMAPS_BYTES).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                [b.rss, b.pss, b.shared_clean, b.shared_dirty, b.private_clean, b.private_dirty, b.swap],
                want
            );
        }
    }
}
