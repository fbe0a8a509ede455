//! `idm-scim`: a SCIM 2.0 service provider (RFC 7643/7644) in front of idmd.
//! It owns the SCIM representation and reaches the data only over gRPC.
//!
//! - `scim/`: the protocol on its own (schemas, messages, loose parsing, PATCH,
//!   projection, discovery documents).
//! - `mapping/`: the declared map between SCIM resources and managed objects,
//!   which also rewrites filters and sort keys.
//! - `service.rs`: the operations (read, create, replace, patch, delete, list).
//! - `core.rs`: the gRPC client of idmd; `bearer.rs`: the bearers it
//!   recently accepted.
//! - `http/`: axum routes, extractors and error responses.

// Tests may unwrap; the library itself is still checked without this (clippy
// --all-targets builds it both ways).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod bearer;
pub mod core;
pub mod http;
pub mod mapping;
pub mod scim;
pub mod service;
