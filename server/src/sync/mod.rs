//! Synchronization: the mapping model and Wren's situations and policies.
//! The reconciliation engine and implicit sync build on these.

mod mapping;
mod situation;
mod transform;

pub use mapping::{DEFAULT_TASK_THREADS, Endpoint, Mapping, MappingError, Policy, PropertyMapping};
pub use situation::{Action, Situation};
pub use transform::{PropertyError, PropertyMapper};
