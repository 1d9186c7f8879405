//! The web page at `/` and its files (`/assets/<file>`, `/samples/<file>`), embedded in the
//! binary: nothing is read from disk or fetched from elsewhere, at build or at run time.
//!
//! Caching: the page itself is `no-cache` (revalidated each time, a 304 when unchanged) and
//! links its files with `?v=<version>`, a hash of everything embedded here; a file asked for
//! with the current version is cached for a year (`immutable`), any other request for it is
//! revalidated by `ETag`.

use std::sync::OnceLock;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// The page, with `__ASSET_VERSION__` where each file's link takes its version.
const INDEX_HTML: &str = include_str!("../../assets/index.html");
const VERSION_PLACEHOLDER: &str = "__ASSET_VERSION__";

/// What the page may load: only this origin (plus `blob:` for the preview of a picked image).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
const CACHE_REVALIDATE: &str = "no-cache";

/// One embedded file, by the path it is served at.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        path: "/assets/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/icon.svg"),
    },
    Asset {
        path: "/samples/chelsea.jpg",
        content_type: "image/jpeg",
        body: include_bytes!("../../assets/samples/chelsea.jpg"),
    },
    Asset {
        path: "/samples/coffee.jpg",
        content_type: "image/jpeg",
        body: include_bytes!("../../assets/samples/coffee.jpg"),
    },
    Asset {
        path: "/samples/rocket.jpg",
        content_type: "image/jpeg",
        body: include_bytes!("../../assets/samples/rocket.jpg"),
    },
];

/// FNV-1a, 64 bits: a stable content hash for versions and `ETag`s (not for security).
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The version of everything embedded: changes whenever any file or the page changes.
pub fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let hash = ASSETS
            .iter()
            .fold(fnv1a(FNV_OFFSET, INDEX_HTML.as_bytes()), |h, asset| {
                fnv1a(fnv1a(h, asset.path.as_bytes()), asset.body)
            });
        format!("{:012x}", hash >> 16)
    })
}

/// The page as served: versioned links filled in.
fn index_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| INDEX_HTML.replace(VERSION_PLACEHOLDER, asset_version()))
}

/// `GET /`: the page.
#[utoipa::path(get, path = "/", tag = "page",
    responses(
        (status = 200, description = "The web page (its assets are under /assets/ and /samples/)", content_type = "text/html"),
        (status = 304, description = "Not modified: the client's `If-None-Match` names the current version"),
    ))]
pub async fn index(headers: HeaderMap) -> Response {
    let etag = format!("\"{}\"", asset_version());
    let mut response = respond(
        &headers,
        &etag,
        "text/html; charset=utf-8",
        CACHE_REVALIDATE,
        index_html().as_bytes(),
    );
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /assets/<file>`: the page's scripts, styles and icon.
#[utoipa::path(get, path = "/assets/{file}", tag = "page",
    params(("file" = String, Path, description = "File name; `?v=<version>` makes it cacheable for ever")),
    responses(
        (status = 200, description = "The file (JavaScript, CSS or SVG)", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "image/svg+xml"),
        )),
        (status = 304, description = "Not modified: the client's `If-None-Match` names the current version"),
        (status = 404, description = "No such file", body = crate::replies::ErrorReply),
    ))]
pub async fn page_asset(uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    asset(uri, headers).await
}

/// `GET /samples/<file>`: the sample photos the page offers.
#[utoipa::path(get, path = "/samples/{file}", tag = "page",
    params(("file" = String, Path, description = "Photo file name")),
    responses(
        (status = 200, description = "The photo (JPEG)", content_type = "image/jpeg"),
        (status = 304, description = "Not modified: the client's `If-None-Match` names the current version"),
        (status = 404, description = "No such file", body = crate::replies::ErrorReply),
    ))]
pub async fn sample(uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    asset(uri, headers).await
}

/// An embedded file, by its full path.
async fn asset(uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.path == uri.path())
        .ok_or(ApiError::NotFound)?;
    let wanted = format!("v={}", asset_version());
    let versioned = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == wanted));
    let cache = if versioned {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    };
    let etag = format!("\"{:016x}\"", fnv1a(FNV_OFFSET, asset.body));
    Ok(respond(
        &headers,
        &etag,
        asset.content_type,
        cache,
        asset.body,
    ))
}

/// A 200 with the body, or a bodiless 304 when the client's `If-None-Match` names `etag`.
fn respond(
    headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    cache: &'static str,
    body: &'static [u8],
) -> Response {
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_in_the_page_is_an_embedded_file_of_the_current_version() {
        let html = index_html();
        assert!(!html.contains(VERSION_PLACEHOLDER));
        for asset in ASSETS {
            if asset.path.ends_with(".css") || asset.path.ends_with(".js") {
                let link = format!("{}?v={}", asset.path, asset_version());
                assert!(html.contains(&link), "{link} not linked");
            }
        }
        let links = ["src=\"", "href=\"", "data-sample=\""]
            .iter()
            .flat_map(|attribute| {
                html.split(attribute)
                    .skip(1)
                    .filter_map(|rest| rest.split('"').next())
            });
        for link in links.filter(|link| !link.starts_with('#')) {
            let path = link.split('?').next().unwrap_or(link);
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "the page links {link}, which is not embedded"
            );
        }
    }

    #[test]
    fn the_version_is_short_hex() {
        let version = asset_version();
        assert_eq!(version.len(), 12);
        assert!(version.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
