//! Symbolisation of sampled addresses, off the hot path (on the sampler thread only), with
//! Rust and C++ demangling and DWARF inline frames (blazesym).
//!
//! Invariants: an address is symbolised once and cached (the cache is cleared when it grows
//! past its bound, so memory stays bounded); frames come out outermost first, inline frames
//! expanded; frame names never contain `;` (the folded separator) or line breaks and are at
//! most [`MAX_FRAME_LEN`] bytes. An address that cannot be symbolised becomes
//! `[unknown]`. The process is a parameter, so another pid can be symbolised the same way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Reason, Symbolized, Symbolizer};
use blazesym::Pid;

/// Longest frame name sent (the collector's default limit is 4096 bytes).
pub const MAX_FRAME_LEN: usize = 1024;
const CACHE_BOUND: usize = 200_000;

/// Frames of one address, outermost first.
pub(crate) type Frames = Arc<[Arc<str>]>;

pub(crate) struct Symbols {
    symbolizer: Symbolizer,
    pid: u32,
    cache: HashMap<u64, Frames>,
}

impl std::fmt::Debug for Symbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbols")
            .field("pid", &self.pid)
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl Symbols {
    /// Symbolises addresses of process `pid` (0 = this process).
    pub(crate) fn new(pid: u32) -> Symbols {
        Symbols {
            symbolizer: Symbolizer::builder()
                .enable_demangling(true)
                .enable_inlined_fns(true)
                // Inlined functions are only reported with code information.
                .enable_code_info(true)
                .build(),
            pid,
            cache: HashMap::new(),
        }
    }

    /// Makes sure every address in `addrs` is cached.
    pub(crate) fn resolve(&mut self, addrs: impl IntoIterator<Item = u64>) {
        let mut missing: Vec<u64> = addrs
            .into_iter()
            .filter(|a| !self.cache.contains_key(a))
            .collect();
        if missing.is_empty() {
            return;
        }
        missing.sort_unstable();
        missing.dedup();
        if self.cache.len() + missing.len() > CACHE_BOUND {
            self.cache.clear();
        }
        let mut process = Process::new(Pid::from(self.pid));
        process.perf_map = true;
        let src = Source::Process(process.clone());
        // Some system libraries' debug links cannot be read; their ELF symbols still can. And
        // optimised builds often carry only line tables, whose function names are short
        // (`price`); the ELF symbol has the whole path (`shop::cart::price`).
        process.debug_syms = false;
        let plain = Source::Process(process);
        let elf: Vec<Option<String>> =
            match self.symbolizer.symbolize(&plain, Input::AbsAddr(&missing)) {
                Ok(found) => found
                    .into_iter()
                    .map(|s| match s {
                        Symbolized::Sym(sym) => Some(sym.name.into_owned()),
                        Symbolized::Unknown(_) => None,
                    })
                    .collect(),
                Err(_) => vec![None; missing.len()],
            };
        // One unreadable module fails a whole batch: then go address by address.
        let found = match self.symbolizer.symbolize(&src, Input::AbsAddr(&missing)) {
            Ok(found) => found,
            Err(_) => missing
                .iter()
                .map(|a| {
                    self.symbolizer
                        .symbolize_single(&src, Input::AbsAddr(*a))
                        .or_else(|_| self.symbolizer.symbolize_single(&plain, Input::AbsAddr(*a)))
                        .unwrap_or(Symbolized::Unknown(Reason::IgnoredError))
                })
                .collect(),
        };
        for (i, addr) in missing.iter().enumerate() {
            let frames: Frames = match found.get(i) {
                Some(Symbolized::Sym(sym)) => std::iter::once(outer_name(
                    sym.name.as_ref(),
                    elf.get(i).and_then(Option::as_deref),
                ))
                .chain(sym.inlined.iter().map(|f| Cow::Borrowed(f.name.as_ref())))
                .map(|name| Arc::from(clean(&name)))
                .collect(),
                _ => Arc::from([Arc::from("[unknown]")]),
            };
            self.cache.insert(*addr, frames);
        }
    }

    /// The cached frames of `addr` ([`Symbols::resolve`] it first).
    pub(crate) fn frames(&self, addr: u64) -> Option<&Frames> {
        self.cache.get(&addr)
    }
}

/// The name of an address's outermost function: DWARF's, unless DWARF has only the short name
/// (no `::`, generic arguments aside) and the ELF symbol is the same function with its path;
/// then the ELF path with DWARF's generic arguments (`chain::generic<u64>`).
fn outer_name<'a>(dwarf: &'a str, elf: Option<&'a str>) -> Cow<'a, str> {
    let base = dwarf.split('<').next().unwrap_or(dwarf);
    match elf {
        Some(elf)
            if !base.contains("::") && !base.is_empty() && elf.ends_with(&format!("::{base}")) =>
        {
            match dwarf.get(base.len()..) {
                Some(args) if !args.is_empty() => Cow::Owned(format!("{elf}{args}")),
                _ => Cow::Borrowed(elf),
            }
        }
        _ => Cow::Borrowed(dwarf),
    }
}

/// A frame name safe for folded text.
pub(crate) fn clean(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c {
            ';' => ',',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    if out.len() > MAX_FRAME_LEN {
        let mut end = MAX_FRAME_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_known_function() -> u64 {
        a_known_function as *const () as u64
    }

    #[test]
    fn symbolises_this_process_and_cleans_names() {
        let addr = a_known_function();
        let mut symbols = Symbols::new(0);
        symbols.resolve([addr, 1]);
        let frames = symbols.frames(addr).expect("cached");
        assert!(
            frames
                .iter()
                .any(|f| f.contains("symbols::tests::a_known_function")),
            "{frames:?}"
        );
        assert_eq!(&*symbols.frames(1).expect("cached")[0], "[unknown]");
        assert_eq!(clean("<[u8; 4] as X>\n"), "<[u8, 4] as X> ");
    }

    /// JIT frames from `/tmp/perf-<pid>.map`, in the lines each runtime writes (`START SIZE
    /// name`, hexadecimal): node's `--perf-basic-prof`, Python 3.12's `-X perf`, and Java's
    /// perf-map-agent. The "JIT code" is a heap block of its own anonymous mapping.
    #[test]
    fn jit_frames_come_from_the_perf_map_in_each_runtimes_format() {
        let block = vec![0u8; 8 << 20];
        let base = block.as_ptr() as u64;
        let names = [
            "LazyCompile:~handleRequest /srv/app/server.js:42",
            "py::price:/srv/app/shop/cart.py",
            "Lcom/shop/Cart;::price",
        ];
        let mut map = String::new();
        for (i, name) in names.iter().enumerate() {
            map.push_str(&format!("{:x} 100 {name}\n", base + 0x1000 * i as u64));
        }
        let path = format!("/tmp/perf-{}.map", std::process::id());
        std::fs::write(&path, map).expect("write the perf map");
        let addrs: Vec<u64> = (0..names.len() as u64)
            .map(|i| base + 0x1000 * i + 0x10)
            .collect();
        let mut symbols = Symbols::new(0);
        symbols.resolve(addrs.iter().copied());
        let _ = std::fs::remove_file(&path);
        for (addr, name) in addrs.iter().zip(names) {
            let frames = symbols.frames(*addr).expect("cached");
            assert_eq!(frames.len(), 1, "{frames:?}");
            assert_eq!(&*frames[0], clean(name), "`;` is the folded separator");
        }
        std::hint::black_box(block);
    }

    #[test]
    fn short_dwarf_names_take_the_elf_path() {
        assert_eq!(
            outer_name("price", Some("demo::shop::cart::price")),
            "demo::shop::cart::price"
        );
        // A different function, or a DWARF name that has its path already: DWARF wins.
        assert_eq!(outer_name("price", Some("demo::shop::cart::load")), "price");
        assert_eq!(outer_name("a::price", Some("b::a::price")), "a::price");
        assert_eq!(outer_name("main", None), "main");
        assert_eq!(
            outer_name("generic<u64>", Some("chain::generic")),
            "chain::generic<u64>"
        );
        assert_eq!(outer_name("<u64 as X>", Some("a::b")), "<u64 as X>");
    }
}
