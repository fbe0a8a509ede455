//! `idm-surreal-server`: the `surreal` binary (`start`, `import`, `export`,
//! `isready`, …) for idm's tests, from SurrealDB's own server crate.

// A release build computes the layout of SurrealDB's deepest async fns here.
#![recursion_limit = "256"]

use std::process::ExitCode;

fn main() -> ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
