//! The console's own files, compiled into the binary: no CDN, no font
//! download, nothing fetched from elsewhere (the machine may be offline).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ConsoleState;

/// htmx 2.0.11 (`htmx.org` on npm, `dist/htmx.min.js`), pinned: sha256
/// d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717. The
/// version is in the path, so browsers may keep it for a year.
const HTMX: &[u8] = include_bytes!("static/htmx-2.0.11.min.js");
const CSS: &[u8] = include_bytes!("static/console.css");

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/static/htmx-2.0.11.min.js", get(htmx))
        .route("/static/console.css", get(css))
}

async fn htmx() -> Response {
    asset(
        HTMX,
        "text/javascript; charset=utf-8",
        "public, max-age=31536000, immutable",
    )
}

/// The stylesheet changes with the gateway, so it is revalidated.
async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8", "no-cache")
}

fn asset(body: &'static [u8], content_type: &'static str, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn htmx_is_the_pinned_file() {
        let digest = Sha256::digest(super::HTMX);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
        );
    }
}
