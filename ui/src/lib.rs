//! The web dashboard: plain JavaScript and CSS under `ui/assets/`, embedded in the binary with
//! `include_bytes!` and served at `/` (the page) and `/assets/{file}` by [`router`].
//!
//! Invariants: nothing is fetched from anywhere but this server (the Content-Security-Policy
//! says so to the browser too); the page reads only the JSON API, with the user's bearer token
//! when one is set; every name from the API reaches the DOM as text, never as markup.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The page every dashboard URL loads (state lives in the `#` part).
pub const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    bytes: include_bytes!("../assets/index.html"),
};

/// The files under `/assets/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "util.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/util.js"),
    },
    Asset {
        name: "chart.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/chart.js"),
    },
    Asset {
        name: "flame.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/flame.js"),
    },
    Asset {
        name: "pages.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/pages.js"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../assets/favicon.svg"),
    },
];

/// Only this server's own scripts, styles and images; API calls to the same origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Finds an embedded asset by its file name.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn respond(a: &Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        a.bytes,
    )
        .into_response()
}

async fn index() -> Response {
    respond(&INDEX)
}

/// Browsers ask for `/favicon.ico` whatever the page says; answer with the SVG icon.
async fn favicon() -> Response {
    match asset("favicon.svg") {
        Some(a) => respond(a),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn file(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some(a) => respond(a),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such dashboard asset\n",
        )
            .into_response(),
    }
}

/// The dashboard's routes, for any router state: `GET /`, `/index.html`, `/favicon.ico` and
/// `/assets/{file}`.
/// Merge it into the API router; the paths do not overlap with `/api/`.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/favicon.ico", get(favicon))
        .route("/assets/{file}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_loads_is_embedded() {
        let page = std::str::from_utf8(INDEX.bytes).expect("utf-8");
        for part in page.split("/assets/").skip(1) {
            let name = part.split('"').next().expect("quoted");
            assert!(asset(name).is_some(), "{name} is not embedded");
        }
    }

    #[test]
    fn assets_never_put_data_into_markup() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).expect("utf-8");
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", a.name);
            }
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{} names a URL",
                a.name
            );
        }
    }
}
