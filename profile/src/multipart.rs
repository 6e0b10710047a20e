//! Just enough `multipart/form-data` to take one named part out of a body (Pyroscope agents
//! send pprof to `/ingest` as a form with `profile`, `previous_profile` and
//! `sample_type_config` parts).
//!
//! Invariants: the parser only slices the body it is given; a malformed body yields `None`;
//! a boundary is at most [`MAX_BOUNDARY`] bytes (RFC 2046) before any search, and every search
//! is `memchr::memmem`'s, linear in the body, so no boundary can make the parse quadratic.

use memchr::memmem;

use super::error::ProfileError;

/// The longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY: usize = 70;

/// The boundary of a `multipart/form-data` content type, refused when it is empty or longer
/// than [`MAX_BOUNDARY`]; `None` for another content type.
pub fn form_boundary(content_type: &str) -> Result<Option<&str>, ProfileError> {
    match boundary(content_type) {
        Some(b) if b.is_empty() || b.len() > MAX_BOUNDARY => Err(ProfileError::Boundary {
            len: b.len(),
            max: MAX_BOUNDARY,
        }),
        other => Ok(other),
    }
}

/// The boundary of a `multipart/form-data` content type, unchecked (see [`form_boundary`]).
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
    let delim = memmem::Finder::new(delim.as_bytes());
    let blank = memmem::Finder::new(b"\r\n\r\n");
    let mut rest = body;
    loop {
        let at = delim.find(rest)?;
        rest = rest.get(at + delim.needle().len()..)?;
        if rest.starts_with(b"--") {
            return None;
        }
        let headers_end = blank.find(rest)?;
        let headers = std::str::from_utf8(&rest[..headers_end]).ok()?;
        let content = &rest[headers_end + 4..];
        let end = delim.find(content)?;
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

    #[test]
    fn boundaries_are_at_most_70_bytes() {
        let ok = format!("multipart/form-data; boundary={}", "b".repeat(70));
        assert_eq!(
            form_boundary(&ok).expect("70 is fine").map(str::len),
            Some(70)
        );
        let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
        assert!(matches!(
            form_boundary(&long),
            Err(ProfileError::Boundary { len: 71, max: 70 })
        ));
        assert!(matches!(
            form_boundary("multipart/form-data; boundary=\"\""),
            Err(ProfileError::Boundary { len: 0, .. })
        ));
        assert_eq!(
            form_boundary("application/octet-stream").expect("not a form"),
            None
        );
    }

    mod props {
        use super::*;
        use profwatch_testkit::alloc::within;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any header and body: no panic; a part found lies inside the body.
            #[test]
            fn any_form_is_read_without_panic(
                ct in "[ -~]{0,120}",
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                name in "[a-z_]{0,12}",
            ) {
                if let Ok(Some(b)) = form_boundary(&ct) {
                    prop_assert!(b.len() <= 70);
                    // A part is found in place: nothing copied, at most the searcher's tables.
                    let found = within("a multipart search", 4096, || part(&body, b, &name))
                        .map_err(TestCaseError::fail)?;
                    if let Some(p) = found {
                        let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
                        prop_assert!(p.as_ptr() as usize >= start && p.as_ptr() as usize + p.len() <= end);
                    }
                }
            }

            /// A form built around any part content gives that content back.
            #[test]
            fn a_built_form_gives_its_part_back(
                boundary in "[A-Za-z0-9]{1,70}",
                content in proptest::collection::vec(any::<u8>(), 0..512),
            ) {
                let mut body = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\n"
                ).into_bytes();
                body.extend_from_slice(&content);
                body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
                let needle = format!("\r\n--{boundary}");
                // A content holding the delimiter itself cannot be told apart; skip those.
                prop_assume!(!content.windows(needle.len()).any(|w| w == needle.as_bytes()));
                let found = within("a multipart search", 4096, || part(&body, &boundary, "profile"))
                    .map_err(TestCaseError::fail)?;
                prop_assert_eq!(found, Some(&content[..]));
            }
        }
    }
}
