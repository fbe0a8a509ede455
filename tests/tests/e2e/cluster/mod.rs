//! Several idmd nodes on one real SurrealDB server (`idm_tests::cluster`):
//! what a deployment behind a load balancer relies on.

mod basics;
mod conf;
mod runs;
mod sync;
mod tokens;
