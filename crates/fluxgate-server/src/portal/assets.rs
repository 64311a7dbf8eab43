//! The portal's static files, embedded in the binary and served with a content hash in their
//! URL, so browsers may cache them for a year and still never run a stale one.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const FILES: [Asset; 3] = [
    Asset {
        name: "portal.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/portal.css"),
    },
    Asset {
        name: "portal.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/portal.js"),
    },
    // htmx 2.0.11 (0BSD), from the npm registry's `htmx.org` package, vendored unchanged
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/htmx-2.0.11.min.js"),
    },
];

/// The URLs pages link to: `/assets/{hash}/{name}`.
pub struct AssetUrls {
    /// The stylesheet.
    pub css: String,
    /// The portal's own script.
    pub js: String,
    /// htmx.
    pub htmx: String,
}

fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hasher = Sha256::new();
        for file in &FILES {
            hasher.update(file.bytes);
        }
        hasher.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// The asset URLs of this build.
pub fn urls() -> &'static AssetUrls {
    static URLS: OnceLock<AssetUrls> = OnceLock::new();
    URLS.get_or_init(|| {
        let url = |name: &str| format!("/assets/{}/{name}", version());
        AssetUrls {
            css: url("portal.css"),
            js: url("portal.js"),
            htmx: url("htmx.min.js"),
        }
    })
}

/// `GET /assets/{version}/{name}`: the file, cacheable for a year when the version is this
/// build's; another version is answered too, but not cached.
pub async fn serve(Path((asked_version, name)): Path<(String, String)>) -> Response {
    let Some(file) = FILES.iter().find(|f| f.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache = if asked_version == version() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(file.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        file.bytes,
    )
        .into_response()
}
