//! `idm-gateway`: the HTTPS front of idm: a SCIM 2.0 service provider
//! (RFC 7643/7644), Wren's REST API and the web console, in front of idmd;
//! it reaches the data only over gRPC.
//!
//! - `scim/`: the protocol on its own (schemas, messages, loose parsing, PATCH,
//!   projection, discovery documents).
//! - `mapping/`: the declared map between SCIM resources and managed objects,
//!   which also rewrites filters and sort keys.
//! - `service.rs`: the operations (read, create, replace, patch, delete, list).
//! - `core.rs`: the gRPC client of idmd; `bearer.rs`: the bearers it
//!   recently accepted.
//! - `http/`: axum routes, extractors and error responses; `http/origin.rs`:
//!   the scheme a request came by (TLS, or a trusted proxy's
//!   `X-Forwarded-Proto`) and the base URL of locations.
//! - `rest/`: Wren:IDM's REST API at `/openidm` (its auth, error shape and
//!   endpoints), over the same gRPC core.
//! - `console/`: the admin web console at `/admin` (server-rendered pages,
//!   templates under `templates/console/`), over the same gRPC core.
//! - `health.rs`: `GET /health` (the gateway's and the core's components).
//! - `tls.rs`: the certificate served (yours, or a self-signed one kept
//!   under the data directory) and the rustls configuration.

// Tests may unwrap; the library itself is still checked without this (clippy
// --all-targets builds it both ways).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod bearer;
pub mod console;
pub mod core;
pub mod health;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod rest;
pub mod scim;
pub mod service;
pub mod tls;
