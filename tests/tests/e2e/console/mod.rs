//! The web console at `/admin`, over HTTP as a browser without JavaScript
//! (and htmx) would ask for it; `browser.rs` drives a real Chromium.

mod accounts;
mod audit;
mod browser;
mod managed;
mod mappings;
mod schedules;
mod session;
mod sync;
