//! The web dashboard: plain JavaScript (ES modules) and CSS under `ui/assets/`, embedded in the
//! binary with `include_bytes!` and served at `/` (the page) and `/assets/{path}` by [`router`].
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

const JS: &str = "text/javascript; charset=utf-8";

/// An asset named by its path under `ui/assets/`, which is also its path under `/assets/`.
macro_rules! embed {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../assets/", $name)),
        }
    };
}

/// The files under `/assets/`. The page loads one script, `app.js`, an ES module that imports
/// the others by relative paths; `pages/` holds one module per page.
pub const ASSETS: &[Asset] = &[
    embed!("app.css", "text/css; charset=utf-8"),
    embed!("favicon.svg", "image/svg+xml"),
    embed!("app.js", JS),
    embed!("probe.js", JS),
    embed!("api.js", JS),
    embed!("dom.js", JS),
    embed!("tooltip.js", JS),
    embed!("hash.js", JS),
    embed!("format.js", JS),
    embed!("metric.js", JS),
    embed!("builds.js", JS),
    embed!("cells.js", JS),
    embed!("table.js", JS),
    embed!("chart.js", JS),
    embed!("flame.js", JS),
    embed!("page.js", JS),
    embed!("pages/overview.js", JS),
    embed!("pages/endpoint.js", JS),
    embed!("pages/flame.js", JS),
    embed!("pages/compare.js", JS),
    embed!("pages/regressions.js", JS),
    embed!("pages/regression.js", JS),
    embed!("pages/memory.js", JS),
];

/// Only this server's own scripts, styles and images; API calls to the same origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Finds an embedded asset by its path under `/assets/`. Only an exact match answers, so no
/// request path (`..`, `//`, encoded slashes) can reach anything but the embedded files.
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
/// `/assets/{path}` (`path` may name a file in a folder, such as `pages/flame.js`).
/// Merge it into the API router; the paths do not overlap with `/api/`.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/favicon.ico", get(favicon))
        .route("/assets/{*path}", get(file))
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
    fn the_page_loads_one_module() {
        let page = std::str::from_utf8(INDEX.bytes).expect("utf-8");
        assert_eq!(page.matches("<script").count(), 1, "one entry point");
        assert!(page.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
    }

    /// The paths a module imports at run time (`import ... from "./x.js"`, `import "./x.js"`),
    /// resolved against the module's own folder; type-only `@import` comments are not imports.
    fn imports(a: &Asset) -> Vec<String> {
        let text = std::str::from_utf8(a.bytes).expect("utf-8");
        let mut dir: Vec<&str> = a.name.split('/').collect();
        dir.pop();
        text.lines()
            .filter(|l| l.starts_with("import "))
            .map(|l| {
                let spec = l.split('"').nth(1).expect("a quoted module path");
                let mut path = dir.clone();
                for part in spec.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            assert!(
                                path.pop().is_some(),
                                "{} imports {spec} above /assets/",
                                a.name
                            );
                        }
                        p => path.push(p),
                    }
                }
                path.join("/")
            })
            .collect()
    }

    #[test]
    fn every_module_an_asset_imports_is_embedded() {
        let app = asset("app.js").expect("app.js");
        assert!(
            imports(app).contains(&"pages/flame.js".to_owned()),
            "the parser reads imports"
        );
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for name in imports(a) {
                let imported = asset(&name)
                    .unwrap_or_else(|| panic!("{} imports {name}, which is not embedded", a.name));
                assert_eq!(imported.content_type, JS, "{name}");
            }
        }
    }

    #[test]
    fn every_file_under_assets_is_embedded() {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("read assets") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).expect("under assets");
                    out.push(rel.to_str().expect("utf-8").to_owned());
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        for f in files.iter().filter(|f| *f != INDEX.name) {
            assert!(asset(f).is_some(), "ui/assets/{f} is not listed in ASSETS");
        }
        assert_eq!(files.len(), ASSETS.len() + 1, "{files:?}");
    }

    #[test]
    fn only_exact_asset_paths_answer() {
        assert!(asset("pages/flame.js").is_some());
        for name in [
            "",
            "pages",
            "pages/",
            "/app.js",
            "./app.js",
            "pages/../app.js",
            "pages//flame.js",
            "../src/lib.rs",
            "index.html",
        ] {
            assert!(asset(name).is_none(), "{name:?}");
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
