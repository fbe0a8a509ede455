//! The web console at `/admin`, over HTTP as a browser without JavaScript
//! (and htmx) would ask for it; `browser.rs` drives a real Chromium.

mod browser;
mod accounts;
mod audit;
mod session;
mod sync;
