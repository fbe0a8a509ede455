//! The admin web console at `/admin`: server-rendered pages for people,
//! over the core's gRPC services like every other front end of the gateway.
//!
//! - `mod.rs`: [`ConsoleState`], [`router`], and the security headers every
//!   response carries.
//! - `session.rs`: the session cookie, the [`Viewer`] extractor (who is
//!   looking; a page asked for without a session redirects to the login
//!   page), the [`Form`] extractor (a posted form, refused without its CSRF
//!   token), and [`console_call!`].
//! - `page.rs`: [`Chrome`] (what the layout needs) and [`render`].
//! - `error.rs`: [`ConsoleError`], an error page.
//! - `login.rs`: log in and out; `dashboard.rs`: the start page.
//! - `assets.rs`: htmx (pinned) and the stylesheet, served from the binary.
//!
//! ## Adding a page
//!
//! 1. `console/<room>.rs` with `pub fn routes() -> Router<ConsoleState>`
//!    (paths relative to `/admin`), listed in [`router`] with `.merge(…)`.
//! 2. A handler takes `State(state): State<ConsoleState>` and `viewer:
//!    Viewer` (a posted form: `form: Form`, which carries its viewer), and
//!    returns `Result<Response, ConsoleError>`.
//! 3. Core calls: `console_call!(&state, &viewer,
//!    ObjectServiceClient.get_object(GetObjectRequest { name: name.clone() }))
//!    .await?` — a failed call becomes the right error page by itself.
//! 4. The template: `gateway/templates/console/<room>/<page>.html`, a struct
//!    with a `chrome: Chrome` field (`Chrome::new(&state, &viewer, Nav::X,
//!    "Title").await`), `{% extends "console/layout.html" %}` and a
//!    `{% block main %}`; answer with `Ok(render(&page))`. Requests from
//!    htmx (`HX-Target: main`) get the main block alone, anything else the
//!    whole page, so every link and form works without JavaScript.
//! 5. A change: `form.viewer.require_change()?` first, then the call, then
//!    `see_other("/admin/…")` (post/redirect/get); on a refusal the form is
//!    rendered again with the messages.

mod accounts;
mod assets;
mod audit;
mod dashboard;
pub mod error;
mod login;
mod managed;
pub mod mappings;
pub mod page;
pub mod runs;
pub mod schedules;
pub mod session;
mod sync;

/// One call of a core service with the viewer's session, an error page on
/// failure: `console_call!(&state, &viewer, ReconServiceClient.get_recon(request))`.
macro_rules! console_call {
    ($state:expr, $viewer:expr, $client:ident . $method:ident ( $request:expr )) => {{
        let mut client = $client::new($state.core.channel());
        let request = crate::core::Core::authorized(&$viewer.bearer, $request);
        async move {
            let request = request?;
            Ok::<_, crate::console::error::ConsoleError>(
                client.$method(request).await?.into_inner(),
            )
        }
    }};
}
pub(crate) use console_call;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub use self::error::ConsoleError;
pub use self::page::{Chrome, Nav, render};
pub use self::session::{Form, Viewer};
use crate::core::Core;

/// The largest form accepted.
pub const MAX_FORM: usize = 64 * 1024;

/// What every console handler shares; cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub core: Core,
    /// The managed types for the menu (`ObjectService.ListObjectTypes`),
    /// fetched at most every [`TYPES_TTL`].
    types: Arc<Mutex<Option<CachedTypes>>>,
}

/// The menu's managed types, and when they were fetched.
type CachedTypes = (Instant, Vec<page::TypeLink>);

const TYPES_TTL: Duration = Duration::from_secs(30);

impl ConsoleState {
    pub fn new(core: Core) -> Self {
        ConsoleState {
            core,
            types: Arc::default(),
        }
    }
}

/// The routes under `/admin` (mount with `nest_service("/admin", …)`).
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(dashboard::show))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .merge(sync::routes())
        .merge(audit::routes())
        .merge(accounts::routes())
        .merge(assets::routes())
        .merge(managed::routes())
        .merge(mappings::routes())
        .merge(runs::routes())
        .merge(schedules::routes())
        .fallback(not_found)
        .layer(middleware::from_fn(crate::metrics::mark_route))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(middleware::from_fn(error::fragment_errors))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Signed-in people learn the page does not exist; anyone else is sent to
/// the login page first, as for any other page.
async fn not_found(_viewer: Viewer) -> ConsoleError {
    ConsoleError::NotFound("There is no such page.".into())
}

/// A 303 to another console page: the answer to a successful form.
pub fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// The policy every console response carries: nothing but the gateway's own
/// scripts, styles and images (no inline script or style, no framing), and
/// pages nobody keeps (a back button after logout shows no data).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
