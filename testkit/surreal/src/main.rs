//! `idm-surreal-server`: the `surreal` binary (`start`, `import`, `export`,
//! `isready`, …) for idm's tests, from SurrealDB's own server crate.

use std::process::ExitCode;

fn main() -> ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
