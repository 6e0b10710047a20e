//! Just enough `multipart/form-data` to take one named part out of a body (Pyroscope agents
//! send pprof to `/ingest` as a form with `profile`, `previous_profile` and
//! `sample_type_config` parts).
//!
//! Invariant: the parser only slices the body it is given; a malformed body yields `None`.

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut parts = content_type.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The content of the part named `name`.
pub fn part<'a>(body: &'a [u8], boundary: &str, name: &str) -> Option<&'a [u8]> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut rest = body;
    loop {
        let at = find(rest, delim)?;
        rest = &rest[at + delim.len()..];
        if rest.starts_with(b"--") {
            return None;
        }
        let headers_end = find(rest, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&rest[..headers_end]).ok()?;
        let content = &rest[headers_end + 4..];
        let end = find(content, delim)?;
        let content = content[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content[..end]);
        let named = headers.lines().any(|h| {
            let h = h.to_ascii_lowercase();
            h.starts_with("content-disposition:")
                && (h.contains(&format!("name=\"{name}\"")) || h.contains(&format!("name={name};")))
        });
        if named {
            return Some(content);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_part() {
        let ct = "multipart/form-data; boundary=XyZ";
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8b\r\nab\r\n--XyZ--\r\n";
        let b = boundary(ct).expect("boundary");
        assert_eq!(part(body, b, "profile"), Some(&b"\x1f\x8b\r\nab"[..]));
        assert_eq!(part(body, b, "previous_profile"), None);
        assert_eq!(boundary("text/plain"), None);
    }
}
