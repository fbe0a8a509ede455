//! The web console at `/admin`, over HTTP as a browser without JavaScript
//! (and htmx) would ask for it; `browser.rs` drives a real Chromium.

mod managed;
mod session;
