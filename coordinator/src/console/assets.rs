//! The console's files, compiled into the binary (no CDN, no network at run time): one HTML
//! shell for every page, which the script fills from the JSON API, a script and a stylesheet.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Viewer;

const SHELL: &str = include_str!("assets/console.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Where the page may load from and connect to: itself, and other replicas' consoles for the
/// live stream (a page follows its rollout on another replica when its own dies).
const POLICY: &str = "default-src 'self'; connect-src 'self' https:; img-src 'self' data:; \
                      frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Every page: the shell (the script reads the path).
pub async fn page(_viewer: Viewer) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        SHELL,
    )
        .into_response()
}

/// `/assets/<file>`: the script and the stylesheet.
pub async fn file(_viewer: Viewer, Path(name): Path<String>) -> Response {
    let (kind, body) = match name.as_str() {
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "console.css" => ("text/css; charset=utf-8", STYLE),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}
