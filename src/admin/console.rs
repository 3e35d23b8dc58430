//! The audit console: `GET /ui` and its two assets (`/ui/app.js`, `/ui/app.css`), static files
//! built into the binary that read the admin plane's own JSON APIs from the browser.
//!
//! The page holds no data, so it is served without an API key (the browser must load it before
//! it can ask for one); every request it makes for data carries the keys and is checked as any
//! other. Everything it shows comes from clients (keys, user names, client names), so besides
//! the page building its DOM from text only, a Content-Security-Policy allows no script or style
//! but these files: markup slipped into a value could run nothing even if it were parsed.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// What the console's pages may load: its own script and style only, no inline code, no
/// frames around it, and data from its own origin (the admin plane).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The paths served here: exactly these, nothing under them.
pub(super) fn is_asset(path: &str) -> bool {
    matches!(path, "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css")
}

/// The asset at `path` (one of [`is_asset`]'s).
pub(super) fn serve(path: &str) -> Response<Full<Bytes>> {
    let (body, content_type) = match path {
        "/ui/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => (INDEX_HTML, "text/html; charset=utf-8"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers
        .insert(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CSP));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // The files change only with the binary; a stale cached script against a newer API is worse
    // than a reload.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_files_are_assets() {
        for path in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"] {
            assert!(is_asset(path), "{path}");
        }
        for path in ["/ui/x", "/ui/../api/v1/report", "/uix", "/ui/app.js/", "/UI", "/"] {
            assert!(!is_asset(path), "{path}");
        }
    }

    #[test]
    fn the_page_loads_no_inline_code() {
        // The CSP would refuse it; this says why the page broke before a browser does.
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
        assert!(INDEX_HTML.contains("src=\"/ui/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/ui/app.css\""));
        // Data reaches the DOM as text only.
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("insertAdjacentHTML"));
        assert!(!APP_JS.contains("document.write") && !APP_JS.contains("eval("));
        let response = serve("/ui");
        assert_eq!(response.headers()["content-security-policy"], CSP);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}
