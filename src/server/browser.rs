//! Browser requests to the produce and read endpoints: a request's `Origin` and `Sec-Fetch-Site` in, whether it is
//! taken out (and, for the origins `[server] cors_origins` allows, the CORS headers of its answer and preflight).
//!
//! Why: browsers keep basic credentials and send them again, so without this any web page a logged-in user opens
//! could make the browser write records (a form post, even an image tag for `GET /produce/<topic>/<message>`).
//! Clients that are not browsers send neither header and are not affected.

use hyper::HeaderMap;
use hyper::header::{HeaderValue, ORIGIN};

/// Request headers a page may send cross-origin to the API.
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id, traceparent, tracestate";
/// Response headers a page may read.
const EXPOSE_HEADERS: &str = "x-request-id, retry-after, idempotent-replayed";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// What a request's browser headers make of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Site {
    /// Not from a browser, or from a page of luka's own origin.
    Own,
    /// From a page of an origin `cors_origins` allows: answered with CORS headers for it.
    Allowed(HeaderValue),
    /// From another site's page: refused, naming the origin (or "another site" when the browser gave none).
    Refused(String),
}

/// Decides from `Origin`, `Sec-Fetch-Site` and `Host`.
pub fn site(headers: &HeaderMap, allowed: &[String]) -> Site {
    if let Some(origin) = headers.get(ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(text)) {
            return Site::Allowed(origin.clone());
        }
        let host = headers.get(hyper::header::HOST).and_then(|h| h.to_str().ok());
        let authority = text.split_once("://").map(|(_, rest)| rest);
        if authority.is_some_and(|a| Some(a) == host) {
            return Site::Own;
        }
        return Site::Refused(format!("origin '{}'", text.chars().take(100).collect::<String>()));
    }
    // Navigations and image loads send no Origin; Sec-Fetch-Site still says where they came from.
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        Some(b"cross-site") => Site::Refused("another site".to_owned()),
        _ => Site::Own,
    }
}

/// The CORS headers of an answer to `origin`.
pub fn answer_headers(origin: &HeaderValue, headers: &mut HeaderMap) {
    headers.insert("access-control-allow-origin", origin.clone());
    headers.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(hyper::header::VARY, HeaderValue::from_static("origin"));
}

/// The headers of a preflight (`OPTIONS` with `Access-Control-Request-Method`) answer to `origin`, for `methods`.
pub fn preflight_headers(origin: &HeaderValue, methods: &'static str, headers: &mut HeaderMap) {
    answer_headers(origin, headers);
    headers.insert("access-control-allow-methods", HeaderValue::from_static(methods));
    headers.insert("access-control-allow-headers", HeaderValue::from_static(ALLOW_HEADERS));
    headers.insert("access-control-max-age", HeaderValue::from_static(PREFLIGHT_MAX_AGE));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (hyper::header::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn cross_site_pages_are_refused_unless_allowed() {
        let allowed = vec!["https://app.example.com".to_owned()];
        assert_eq!(site(&headers(&[]), &allowed), Site::Own, "curl, servers");
        assert_eq!(
            site(&headers(&[("sec-fetch-site", "none")]), &allowed),
            Site::Own,
            "typed in"
        );
        assert_eq!(
            site(&headers(&[("sec-fetch-site", "same-origin")]), &allowed),
            Site::Own
        );
        assert_eq!(
            site(&headers(&[("sec-fetch-site", "cross-site")]), &allowed),
            Site::Refused("another site".into())
        );
        assert_eq!(
            site(&headers(&[("origin", "https://evil.example")]), &allowed),
            Site::Refused("origin 'https://evil.example'".into())
        );
        assert_eq!(
            site(&headers(&[("origin", "null")]), &allowed),
            Site::Refused("origin 'null'".into())
        );
        assert_eq!(
            site(
                &headers(&[("origin", "http://luka.local:8080"), ("host", "luka.local:8080")]),
                &allowed
            ),
            Site::Own
        );
        assert!(matches!(
            site(
                &headers(&[("origin", "https://app.example.com"), ("sec-fetch-site", "cross-site")]),
                &allowed
            ),
            Site::Allowed(_)
        ));
    }
}
