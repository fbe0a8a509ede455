//! Synchronization: the mapping model and Wren's situations and policies.
//! `recon` reconciles a mapping's source into its target.

mod mapping;
pub mod outbox;
pub mod provision;
pub mod recon;
mod situation;
mod transform;

pub use mapping::{DEFAULT_TASK_THREADS, Endpoint, Mapping, MappingError, Policy, PropertyMapping};
pub use situation::{Action, Situation};
pub use transform::{PropertyError, PropertyMapper};
