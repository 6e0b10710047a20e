//! The profile frame of the local protocol (`agent/PROTOCOL.md`): how an app hands the sidecar
//! a profile (one label set's stacks over one interval) to relay to the collector.
//!
//! The payload is UTF-8 text: one line of query string (what the collector's
//! `POST /api/v1/profiles` takes: `sample_rate`, `ts` in unix seconds, `service`, `endpoint`,
//! `build`, `dc`, `host`, any other `key=value` as an extra label, `format=folded`), then the
//! stacks in folded form, `root;...;leaf count` per line. The SDK's
//! [`profwatch_agent::sampler::SidecarSink`] writes exactly [`profwatch_agent::sampler::query`], `\n`, then
//! [`profwatch_agent::sampler::folded`].
//!
//! Invariants: a payload is accepted whole or refused whole (reason `bad_profile`), so the
//! collector never refuses a relayed profile for its content: labels are checked with the
//! collector's limits, stacks with its profile limits (frames per stack, bytes per frame); an
//! empty `host` or `dc` is filled by the sidecar. Label keys are mapped and checked by the very
//! code the collector uses ([`SampleLabels::apply`], [`SampleLabels::validate`]).

use std::collections::BTreeMap;

use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::Limits;

/// Frames in one stack the collector accepts.
pub const MAX_FRAMES: usize = 2048;
/// Bytes in one frame name the collector accepts.
pub const MAX_FRAME_BYTES: usize = 4096;
/// Highest `sample_rate` accepted, in Hz.
pub const MAX_SAMPLE_RATE: u32 = 1_000_000;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A parsed, validated profile frame; `host` and `dc` not yet filled.
#[derive(Debug, Clone, PartialEq)]
pub struct Relayed {
    pub profile: ProfileBatch,
    pub frequency_hz: u32,
}

/// Parses a profile frame's payload at wall-clock time `now` (unix ns).
pub fn parse(payload: &[u8], limits: &Limits, now: i64) -> Result<Relayed, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "the profile is not UTF-8".to_owned())?;
    let (head, stacks) = text.split_once('\n').unwrap_or((text, ""));
    let head = head.strip_suffix('\r').unwrap_or(head);
    let mut labels = SampleLabels::default();
    let mut rate = None;
    let mut ts = None;
    for pair in head.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key)?;
        let value = decode(value)?;
        match key.as_str() {
            "format" if value == "folded" || value == "collapsed" => {}
            "format" => return Err(format!("`format` = {value:?}; profile frames are folded")),
            "sample_rate" => {
                rate = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|hz| (1..=MAX_SAMPLE_RATE).contains(hz))
                        .ok_or_else(|| {
                            format!("`sample_rate` = {value:?}; give the frequency in Hz (1 to {MAX_SAMPLE_RATE})")
                        })?,
                );
            }
            "ts" => {
                let secs: i64 = value
                    .parse()
                    .map_err(|_| format!("`ts` = {value:?}; give unix seconds"))?;
                ts = Some(secs.saturating_mul(NANOS_PER_SEC));
            }
            _ => labels.apply(&key, &value),
        }
    }
    let frequency_hz = rate.ok_or("`sample_rate` is missing (the frequency in Hz)")?;
    let ts = ts.unwrap_or(now);
    if ts > now.saturating_add(limits.max_future_skew_ns) {
        return Err(format!(
            "`ts` is {}s in the future",
            (ts - now) / NANOS_PER_SEC
        ));
    }
    if ts < now.saturating_sub(limits.max_age_ns) {
        return Err(format!("`ts` is {}s old", (now - ts) / NANOS_PER_SEC));
    }
    check(&labels, limits)?;
    let ns_per_sample = 1_000_000_000 / u64::from(frequency_hz);
    let mut merged: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (i, line) in stacks.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| format!("stack line {}: {why}", i + 2);
        let (stack, count) = line
            .rsplit_once(' ')
            .ok_or_else(|| bad("expected `frame;frame;... count`"))?;
        let count: u64 = count
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("the count is not a positive integer"))?;
        let frames: Vec<String> = stack.split(';').map(str::to_owned).collect();
        if frames.len() > MAX_FRAMES {
            return Err(bad(&format!("more than {MAX_FRAMES} frames")));
        }
        if frames
            .iter()
            .any(|f| f.is_empty() || f.len() > MAX_FRAME_BYTES)
        {
            return Err(bad(&format!(
                "a frame is empty or longer than {MAX_FRAME_BYTES} bytes"
            )));
        }
        let n = merged.entry(frames).or_default();
        *n = n.saturating_add(count);
    }
    if merged.is_empty() {
        return Err("the profile has no stacks".to_owned());
    }
    Ok(Relayed {
        profile: ProfileBatch {
            ts,
            labels,
            samples: merged
                .into_iter()
                .map(|(frames, samples)| StackSample {
                    frames,
                    samples,
                    cpu_ns: samples.saturating_mul(ns_per_sample),
                })
                .collect(),
        },
        frequency_hz,
    })
}

/// The collector's checks of a profile's labels ([`SampleLabels::validate`]).
pub fn check(labels: &SampleLabels, limits: &Limits) -> Result<(), String> {
    labels.validate(limits).map_err(|e| e.to_string())
}

/// Percent-decoding of a query component (`+` is a space, as in forms).
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use profwatch_agent::sampler::{folded, query};

    fn now() -> i64 {
        profwatch_model::timefmt::now_ns()
    }

    #[test]
    fn what_the_sdk_writes_parses_back() {
        let profile = ProfileBatch {
            ts: now() / NANOS_PER_SEC * NANOS_PER_SEC,
            labels: SampleLabels {
                service: "shop".into(),
                endpoint: "GET /cart/{id}".into(),
                build: "8+1".into(),
                extra: [("flag".to_owned(), "on&off".to_owned())].into(),
                ..SampleLabels::default()
            },
            samples: vec![StackSample {
                frames: vec!["main".into(), "<T as a::B>::run x".into()],
                samples: 3,
                cpu_ns: 3 * 10_101_010,
            }],
        };
        let payload = format!("{}\n{}", query(&profile, 99), folded(&profile));
        let got = parse(payload.as_bytes(), &Limits::default(), now()).expect("parses");
        assert_eq!(got.frequency_hz, 99);
        assert_eq!(got.profile, profile);
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let limits = Limits::default();
        let cases = [
            (&b"sample_rate=99&service=s\n\xff 1\n"[..], "UTF-8"),
            (b"service=s\nmain 1\n", "sample_rate"),
            (b"sample_rate=0&service=s\nmain 1\n", "sample_rate"),
            (b"sample_rate=99\nmain 1\n", "service"),
            (b"sample_rate=99&service=s&format=pprof\nmain 1\n", "format"),
            (b"sample_rate=99&service=s\nmain\n", "line 2"),
            (b"sample_rate=99&service=s\nmain 0\n", "positive"),
            (b"sample_rate=99&service=s\na;;b 1\n", "empty"),
            (b"sample_rate=99&service=s\n", "no stacks"),
            (
                b"sample_rate=99&service=s&ts=99999999999\nmain 1\n",
                "future",
            ),
            (b"sample_rate=99&service=s&bad%zz=1\nmain 1\n", "percent"),
            (b"sample_rate=99&service=s&9bad=1\nmain 1\n", "label"),
            (b"sample_rate=99&service=a%0Ab\nmain 1\n", "control"),
        ];
        for (payload, needle) in cases {
            let err = parse(payload, &limits, now()).expect_err("refused");
            assert!(
                err.contains(needle),
                "{:?}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn aliases_duplicates_and_defaults() {
        let got = parse(
            b"sample_rate=100&service_name=s&hostname=h&__name__=cpu\r\nmain;f 1\nmain;f 2\n\n",
            &Limits::default(),
            now(),
        )
        .expect("parses");
        assert_eq!(got.profile.labels.service, "s");
        assert_eq!(got.profile.labels.host, "h");
        assert!(got.profile.labels.extra.is_empty());
        assert_eq!(got.profile.samples.len(), 1);
        assert_eq!(got.profile.samples[0].samples, 3);
        assert_eq!(got.profile.samples[0].cpu_ns, 30_000_000);
    }
}
