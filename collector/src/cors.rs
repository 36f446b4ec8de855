//! CORS: which retailer sites' pages may call the API from a browser.
//!
//! A tracker on `https://shop.example` that posts JSON with `fetch` (or gzip, or an API key
//! header) makes the browser send a preflight `OPTIONS` first; the collector answers it with
//! the allowed method and headers when the page's `Origin` is configured, and without them
//! otherwise (the browser then does not send the request). Every answer to an allowed origin,
//! errors included, carries `Access-Control-Allow-Origin` so the tracker can read why it was
//! refused, and exposes `Retry-After`.
//!
//! `navigator.sendBeacon` with a string body sends `text/plain` without custom headers: a
//! "simple" request with no preflight, which browsers send whatever the server's CORS policy
//! (they only hide the answer). CORS is therefore not an access control; the API key is.
//! Credentials (cookies) are never allowed: the API needs none.

use axum::http::header::{self, HeaderMap, HeaderValue};

/// The configured origins.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

/// Request headers a tracker may send.
const ALLOW_HEADERS: &str = "authorization, x-api-key, content-type, content-encoding";
/// Browsers may cache a preflight answer this long (seconds).
const MAX_AGE: &str = "600";

impl Cors {
    /// Allows `origins` (`"*"` = any origin).
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().filter(|o| *o != "*").cloned().collect(),
        }
    }

    fn allowed<'a>(&self, request: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = request.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        (self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(text))).then_some(origin)
    }

    /// Adds the headers of an actual (non-preflight) answer.
    pub fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        // The answer depends on Origin: caches must not serve one origin's answer to another.
        response.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = self.allowed(request) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("retry-after"),
            );
        }
    }

    /// Adds the headers of a preflight answer.
    pub fn preflight(&self, request: &HeaderMap, response: &mut HeaderMap) {
        response.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = self.allowed(request) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            response.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            response.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(o: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static(o));
        h
    }

    #[test]
    fn only_configured_origins_get_allow_headers() {
        let cors = Cors::new(&["https://shop.example".into()]);
        let mut out = HeaderMap::new();
        cors.decorate(&origin("https://shop.example"), &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example"
        );
        assert_eq!(out[header::VARY], "origin");
        let mut out = HeaderMap::new();
        cors.preflight(&origin("https://evil.example"), &mut out);
        assert!(out.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(out.get(header::ACCESS_CONTROL_ALLOW_METHODS).is_none());
        let mut out = HeaderMap::new();
        cors.decorate(&HeaderMap::new(), &mut out);
        assert!(out.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[test]
    fn a_star_allows_any_origin_and_echoes_it() {
        let cors = Cors::new(&["*".into()]);
        let mut out = HeaderMap::new();
        cors.preflight(&origin("http://localhost:3000"), &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_HEADERS], ALLOW_HEADERS);
    }
}
