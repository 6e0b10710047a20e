//! Golden tests for the profile conversions, against third-party fixtures in
//! `tests/fixtures/` at the repository root (never edited; see its README for sources and
//! licences):
//!
//! - every `perf script` input collapses to exactly its expected folded output, with inferno's
//!   default options (`*-collapsed.txt`) or with `--all` (`*-collapsed-all.txt`);
//! - the two folded profiles diff to exactly `diff-default-expected.txt`;
//! - a real Go CPU profile survives pprof → batches → pprof with the same per-function totals
//!   and labels.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use profwatch_model::profile::{ProfileBatch, ProfileRow, SampleLabels, StackProfile};
use profwatch_model::Limits;
use profwatch_profile::collapse::{perf_to_folded, PerfOptions};
use profwatch_profile::decode::{convert, decode_profile, pprof_to_batches, DecodeOptions};
use profwatch_profile::encode::{to_pprof_gz, Span};
use profwatch_profile::pprof::Profile;
use profwatch_profile::render::diff_folded;
use profwatch_profile::{ProfileError, ProfileLimits};

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).to_owned()
}

fn read(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    } else {
        raw
    }
}

/// Where inferno's `collapse-perf` and FlameGraph's `stackcollapse-perf.pl` (which wrote the
/// `*-collapsed-all.txt` files) knowingly differ. Each case is still compared exactly, on the
/// input or output adjusted by that one documented rule, and the test checks that the raw
/// output really does differ, so a stale entry fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownDifference {
    /// The input's last event is not followed by a blank line: the Perl script only emits a
    /// stack at a blank line and drops it; inferno emits it at end of input. Compared: the
    /// input without that unterminated event.
    UnterminatedLastEvent,
    /// The Perl script strips `"` and `'` from frame names; inferno keeps them (inferno's own
    /// test suite strips them before comparing, too). Compared: our output without them.
    QuotesStripped,
}

const KNOWN: &[(&str, &str, KnownDifference)] = &[
    (
        "perf-dd-stacks-01",
        "collapsed-all",
        KnownDifference::UnterminatedLastEvent,
    ),
    (
        "perf-numa-stacks-01",
        "collapsed-all",
        KnownDifference::UnterminatedLastEvent,
    ),
    (
        "perf-js-stacks-01",
        "collapsed-all",
        KnownDifference::QuotesStripped,
    ),
];

fn first_difference(got: &str, want: &str) -> String {
    got.lines()
        .zip(want.lines())
        .find(|(g, w)| g != w)
        .map(|(g, w)| format!("got  {g}\nwant {w}"))
        .unwrap_or_else(|| {
            format!(
                "{} lines vs {} expected",
                got.lines().count(),
                want.lines().count()
            )
        })
}

#[test]
fn perf_script_collapses_to_the_expected_folded_output() {
    let dir = fixtures().join("perf-script");
    let mut checked = 0;
    let mut mismatches = Vec::new();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    for input in inputs {
        let name = input.file_name().and_then(|n| n.to_str()).expect("name");
        let stem = name.trim_end_matches(".gz").trim_end_matches(".txt");
        let text = read(&input);
        for (suffix, all) in [("collapsed", false), ("collapsed-all", true)] {
            let expected = dir.join("expected").join(format!("{stem}-{suffix}.txt"));
            if !expected.exists() {
                continue;
            }
            checked += 1;
            let want = String::from_utf8(read(&expected)).expect("utf-8");
            let raw = perf_to_folded(&text, PerfOptions { all }).expect("collapse");
            let known = KNOWN
                .iter()
                .find(|k| k.0 == stem && k.1 == suffix)
                .map(|k| k.2);
            let got = match known {
                None => raw.clone(),
                Some(KnownDifference::QuotesStripped) => raw.replace(['"', '\''], ""),
                Some(KnownDifference::UnterminatedLastEvent) => {
                    let s = String::from_utf8(text.clone()).expect("utf-8");
                    assert!(
                        !s.ends_with("\n\n"),
                        "{stem}: the last event is terminated; drop the KNOWN entry"
                    );
                    let cut = s.rfind("\n\n").expect("several events") + 2;
                    perf_to_folded(&s.as_bytes()[..cut], PerfOptions { all }).expect("collapse")
                }
            };
            if known.is_some() {
                assert_ne!(
                    raw, want,
                    "{stem} ({suffix}) now matches as is; drop its KNOWN entry"
                );
            }
            if got != want {
                mismatches.push(format!(
                    "{stem} ({suffix}):\n{}",
                    first_difference(&got, &want)
                ));
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} golden files found in {}",
        dir.display()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {checked} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}

/// inferno's `diff-folded` writes stacks in hash-map order, which is not stable across runs
/// (nor equal to the order the expected file was written in); ours sorts its output. So the
/// lines are compared as sorted lists: the same lines, each exactly.
#[test]
fn folded_diff_matches_inferno() {
    let dir = fixtures().join("folded");
    let before = String::from_utf8(read(&dir.join("before.txt"))).expect("utf-8");
    let after = String::from_utf8(read(&dir.join("after.txt"))).expect("utf-8");
    let want = String::from_utf8(read(&dir.join("diff-default-expected.txt"))).expect("utf-8");
    let got = diff_folded(&before, &after).expect("diff");
    let mut want_lines: Vec<&str> = want.lines().collect();
    want_lines.sort_unstable();
    assert_eq!(got.lines().collect::<Vec<_>>(), want_lines);
    assert!(got.ends_with('\n'));
}

/// Per function: (self, total) of each value, computed straight from the proto (independent
/// of the converter): the leaf is line 0 of the first location; total counts a function once
/// per sample.
fn per_function(p: &Profile) -> BTreeMap<String, (Vec<i64>, Vec<i64>)> {
    let name = |fid: u64| {
        let f = p.function.iter().find(|f| f.id == fid).expect("function");
        p.string_table[f.name as usize].clone()
    };
    let loc = |id: u64| p.location.iter().find(|l| l.id == id).expect("location");
    let n = p.sample_type.len();
    let mut out: BTreeMap<String, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
    for s in &p.sample {
        let mut seen = std::collections::BTreeSet::new();
        for (i, id) in s.location_id.iter().enumerate() {
            for (j, line) in loc(*id).line.iter().enumerate() {
                let f = name(line.function_id);
                let e = out
                    .entry(f.clone())
                    .or_insert_with(|| (vec![0; n], vec![0; n]));
                if i == 0 && j == 0 {
                    for k in 0..n {
                        e.0[k] += s.value[k];
                    }
                }
                if seen.insert(f) {
                    for k in 0..n {
                        e.1[k] += s.value[k];
                    }
                }
            }
        }
    }
    out
}

fn rows(batches: &[ProfileBatch]) -> StackProfile {
    let mut rows: Vec<ProfileRow> = batches
        .iter()
        .flat_map(|b| {
            b.samples.iter().map(|s| ProfileRow {
                labels: b.labels.clone(),
                frames: s.frames.as_slice().into(),
                samples: s.samples,
                cpu_ns: s.cpu_ns,
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.labels, &a.frames).cmp(&(&b.labels, &b.frames)));
    StackProfile { rows, span: None }
}

#[test]
fn pprof_round_trip_keeps_function_totals_and_labels() {
    let bytes = std::fs::read(fixtures().join("pprof/sample.cpu.pb.gz")).expect("fixture");
    let limits = ProfileLimits::default();
    let original = decode_profile(&bytes, &limits).expect("decode fixture");
    let mut base = SampleLabels {
        service: "golden".into(),
        build: "b1".into(),
        ..SampleLabels::default()
    };
    base.extra.insert("team".into(), "perf".into());
    let label_limits = Limits::default();
    let opt = DecodeOptions {
        base: &base,
        limits: &limits,
        label_limits: &label_limits,
        now: 1,
    };
    let batches = pprof_to_batches(&bytes, &opt).expect("convert");
    assert!(!batches.is_empty());
    let exported = to_pprof_gz(&rows(&batches), Span { from: 0, to: 1 });
    let again = decode_profile(&exported, &limits).expect("decode export");

    // Per-function totals: the original's sample types are samples/count and cpu/nanoseconds,
    // in that order, as are ours.
    let types: Vec<(&str, &str)> = original
        .sample_type
        .iter()
        .map(|t| {
            (
                original.string_table[t.r#type as usize].as_str(),
                original.string_table[t.unit as usize].as_str(),
            )
        })
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let a = per_function(&original);
    let b = per_function(&again);
    assert_eq!(a.len(), b.len(), "same functions");
    for (f, v) in &a {
        assert_eq!(Some(v), b.get(f), "function {f}");
    }

    // Labels survive: the re-ingested batches equal the first ones.
    let empty = SampleLabels::default();
    let opt2 = DecodeOptions {
        base: &empty,
        ..opt
    };
    let back = convert(&again, &opt2).expect("convert export");
    assert_eq!(rows(&back), rows(&batches));
}

#[test]
fn bad_pprof_is_refused() {
    let limits = ProfileLimits::default();
    let bytes = std::fs::read(fixtures().join("pprof/sample.cpu.pb.gz")).expect("fixture");
    let raw = read(&fixtures().join("pprof/sample.cpu.pb.gz"));
    // Truncated protobuf.
    assert!(matches!(
        decode_profile(&raw[..raw.len() / 2], &limits),
        Err(ProfileError::Protobuf(_))
    ));
    // Truncated gzip.
    assert!(decode_profile(&bytes[..bytes.len() / 2], &limits).is_err());
    let p = decode_profile(&bytes, &limits).expect("fixture");
    let base = SampleLabels {
        service: "s".into(),
        ..SampleLabels::default()
    };
    let ll = Limits::default();
    let opt = DecodeOptions {
        base: &base,
        limits: &limits,
        label_limits: &ll,
        now: 1,
    };
    // Location id 0.
    let mut bad = p.clone();
    bad.sample[0].location_id[0] = 0;
    assert!(matches!(
        convert(&bad, &opt),
        Err(ProfileError::LocationIdZero { sample: 0 })
    ));
    // A string index out of range.
    let mut bad = p.clone();
    bad.function[0].name = 1 << 40;
    assert!(matches!(
        convert(&bad, &opt),
        Err(ProfileError::StringIndex { .. })
    ));
    // Too many samples.
    let tight = ProfileLimits {
        max_samples: 3,
        ..ProfileLimits::default()
    };
    assert!(matches!(
        decode_profile(&bytes, &tight),
        Err(ProfileError::TooManySamples { .. })
    ));
    // A 100k-frame stack.
    let mut bad = p.clone();
    let id = bad.sample[0].location_id[0];
    bad.sample[0].location_id = vec![id; 100_000];
    assert!(matches!(
        convert(&bad, &opt),
        Err(ProfileError::TooManyFrames {
            frames: 100_000,
            ..
        })
    ));
}

// --- our own renderers, against checked-in outputs ------------------------------------------

/// Compares `got` with `tests/golden/<name>`; `BLESS=1` writes it instead (review the diff).
fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, got).expect("bless");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    assert!(
        got == want,
        "{name} differs from {}: {}; if the change is intended, run with BLESS=1 and review the diff",
        path.display(),
        first_difference(got, &want)
    );
}

/// The folded fixture as a stored profile of two label sets, with a frame whose name needs
/// escaping in every output (`<`, `&`, `"`).
fn golden_profile() -> StackProfile {
    let text = String::from_utf8(read(&fixtures().join("folded/before.txt"))).expect("utf-8");
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((stack, n)) = line.rsplit_once(' ') else {
            continue;
        };
        let samples: u64 = n.trim().parse().expect("count");
        let labels = SampleLabels {
            service: "golden".into(),
            endpoint: if i % 2 == 0 { "GET /a" } else { "GET /b" }.into(),
            build: "812".into(),
            ..SampleLabels::default()
        };
        rows.push(ProfileRow {
            labels,
            frames: stack.split(';').map(str::to_owned).collect(),
            samples,
            cpu_ns: samples * 10_101_010,
        });
    }
    rows.push(ProfileRow {
        labels: SampleLabels {
            service: "golden".into(),
            endpoint: "GET /a".into(),
            build: "812".into(),
            ..SampleLabels::default()
        },
        frames: ["main".to_owned(), "render<T & \"U\">".to_owned()].into(),
        samples: 3,
        cpu_ns: 30_303_030,
    });
    rows.sort_by(|a, b| (&a.labels, &a.frames).cmp(&(&b.labels, &b.frames)));
    StackProfile { rows, span: None }
}

#[test]
fn the_svg_flame_graph_matches_its_golden_file() {
    let folded: String = golden_profile()
        .merged()
        .iter()
        .map(|(frames, n, _)| format!("{} {n}\n", frames.join(";")))
        .collect();
    let svg = profwatch_profile::render::svg(&folded, "golden <samples>", "samples").expect("svg");
    golden("flame.svg", &String::from_utf8(svg).expect("utf-8"));
}

#[test]
fn the_json_tree_matches_its_golden_file() {
    let profile = golden_profile();
    let merged = profile.merged();
    let tree = profwatch_profile::tree::build(merged.iter().copied(), 40);
    golden(
        "tree.json",
        &(serde_json::to_string_pretty(&tree).expect("json") + "\n"),
    );
}

#[test]
fn the_pprof_export_matches_its_golden_file() {
    let span = Span {
        from: 1_795_000_000_000_000_000,
        to: 1_795_000_060_000_000_000,
    };
    let gz = to_pprof_gz(&golden_profile(), span);
    let profile = decode_profile(&gz, &ProfileLimits::default()).expect("our own export decodes");
    golden("profile.pprof.txt", &format!("{profile:#?}\n"));
}
