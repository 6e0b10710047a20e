//! Percent-encoding of URL query components, shared by every client that builds a query string
//! (the SDK's profile upload, `profwatch import`).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`) is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` as a query key or value.
pub fn query_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_but_the_unreserved_characters() {
        assert_eq!(query_component("GET /a b"), "GET%20%2Fa%20b");
        assert_eq!(query_component("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(query_component("é&="), "%C3%A9%26%3D");
    }
}
