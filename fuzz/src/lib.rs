//! The pure server modules the fuzz targets exercise, included by path so the
//! fuzz build never links idm-server (and SurrealDB with it). Each is std plus
//! a few small crates: the CSV reading (csv, serde_json, and the hashed-id
//! set it finds duplicate uids with), Quartz expressions
//! (chrono, croner) and the filter → SurrealQL compiler (idm-proto, serde_json).

#![allow(dead_code)]

#[path = "../../server/src/connector/csv/rows.rs"]
pub mod csv_rows;

#[path = "../../server/src/hashed_ids.rs"]
pub mod hashed_ids;

#[path = "../../server/src/scheduler/quartz.rs"]
pub mod quartz;

#[path = "../../server/src/store/query.rs"]
pub mod query;
