//! The read-only web view of the mesh: `GET /ui` serves one static page,
//! `GET /ui/ui.js` and `GET /ui/ui.css` its script and style, all compiled
//! into the binary (no build step, nothing fetched from elsewhere).
//!
//! The page holds no data. Its script reads the node's own API from the
//! browser: `/v1/status`, `/v1/peers` and `/v1/consensus` (open to anyone),
//! and `/v1/jobs` and `/v1/reputation` with an observer token the user pastes
//! into the page, which keeps it in the tab's `sessionStorage` and sends it
//! only as `Authorization: Bearer` (never in a URL; see `docs/web-ui.md`). So
//! serving the page grants nothing: what it shows is exactly what the API
//! already shows to whoever holds the same token.
//!
//! Every answer carries a strict Content-Security-Policy (`default-src
//! 'self'`, no inline script or style, `frame-ancestors 'none'`), `nosniff`,
//! no referrer, and `no-store`, so an injected string can neither run nor
//! load anything, the page cannot be framed, and no cache keeps a copy.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The page.
const INDEX_HTML: &str = include_str!("ui/index.html");
/// Its script (the only script: the policy forbids inline ones).
const UI_JS: &str = include_str!("ui/ui.js");
/// Its style sheet.
const UI_CSS: &str = include_str!("ui/ui.css");

/// The policy on every `/ui` answer: the page, its script and style come from
/// this node only, requests go to this node only, nothing inline runs, no
/// plugin loads, forms post nowhere, and no other site may frame the page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ui`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/ui.js`: the page's script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", UI_JS)
}

/// `GET /ui/ui.css`: the page's style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", UI_CSS)
}

/// A static body with its content type and the security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{router, AdminAuth, ApiLimits, ApiState, NodeSnapshot};
    use super::*;
    use axum::body::Body;
    use axum::http::{HeaderMap, Request, StatusCode};
    use mesh_security::ca::{ca_pin, CertVerifier, MeshCa};
    use mesh_security::NodeIdentity;
    use prometheus_client::registry::Registry;
    use std::sync::Arc;
    use tokio::sync::{mpsc, watch};
    use tower::ServiceExt;

    /// The node's whole router, as `server` runs it.
    fn node_router() -> axum::Router {
        let now = 1_700_000_000;
        let ca = MeshCa::init(
            NodeIdentity::from_seed(&[3; 32]),
            "ui test CA",
            now,
            now + 100_000_000,
            [2; 16],
        )
        .unwrap();
        let verifier = CertVerifier::new(ca.cert_der().to_vec(), &ca_pin(ca.cert_der())).unwrap();
        let (_publish, snapshot) = watch::channel(Arc::new(NodeSnapshot::default()));
        let (commands, _) = mpsc::channel(1);
        let state = ApiState {
            snapshot,
            registry: Arc::new(Registry::default()),
            auth: Arc::new(AdminAuth::new(verifier, "m".into())),
            commands,
            proposer: None,
        };
        let limits = ApiLimits {
            max_body_bytes: 1024,
            timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_concurrent_requests: 4,
        };
        router(state, limits)
    }

    async fn get(path: &str) -> (StatusCode, HeaderMap, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = node_router().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn assert_secured(headers: &HeaderMap) {
        let policy = header_text(headers, "content-security-policy");
        assert!(policy.starts_with("default-src 'self';"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(!policy.contains("unsafe-eval"), "{policy}");
        assert_eq!(header_text(headers, "x-content-type-options"), "nosniff");
        assert_eq!(header_text(headers, "x-frame-options"), "DENY");
        assert_eq!(header_text(headers, "referrer-policy"), "no-referrer");
        assert_eq!(header_text(headers, "cache-control"), "no-store");
    }

    #[tokio::test]
    async fn the_page_is_html_with_the_security_headers_and_needs_no_token() {
        for path in ["/ui", "/ui/"] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(
                header_text(&headers, "content-type"),
                "text/html; charset=utf-8"
            );
            assert_secured(&headers);
            assert!(body.starts_with("<!doctype html>"), "{body}");
            assert!(body.contains(r#"<script src="/ui/ui.js" defer></script>"#));
            assert!(body.contains(r#"<link rel="stylesheet" href="/ui/ui.css">"#));
        }
    }

    #[tokio::test]
    async fn the_script_and_style_carry_their_types_and_the_headers() {
        let (status, headers, body) = get("/ui/ui.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_text(&headers, "content-type"),
            "text/javascript; charset=utf-8"
        );
        assert_secured(&headers);
        assert_eq!(body, UI_JS);

        let (status, headers, body) = get("/ui/ui.css").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_text(&headers, "content-type"),
            "text/css; charset=utf-8"
        );
        assert_secured(&headers);
        assert_eq!(body, UI_CSS);
    }

    #[tokio::test]
    async fn other_files_under_ui_are_not_found() {
        for path in ["/ui/other.js", "/ui/index.html", "/ui/ui.js/x"] {
            let (status, _, _) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    /// The page must never rely on inline script, style or event handlers
    /// (the policy blocks them) nor build markup from strings (a peer id or
    /// job name would then be parsed as HTML).
    #[test]
    fn the_assets_have_no_inline_code_and_no_html_sinks() {
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains("style="));
        let handler = INDEX_HTML.split(|c: char| c.is_whitespace()).any(|word| {
            word.strip_prefix("on")
                .and_then(|rest| rest.split_once('='))
                .is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_lowercase()))
        });
        assert!(!handler, "inline event handler in the page");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!UI_JS.contains(sink), "ui.js uses {sink}");
        }
        assert!(!UI_JS.contains("\"style\""), "ui.js sets a style attribute");
    }
}
