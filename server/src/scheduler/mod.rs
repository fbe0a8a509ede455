//! The scheduler (issue 5, in progress): persisted cron schedules that run
//! reconciliations and scripts. So far: Quartz expressions, checked field by
//! field and translated for tokio-cron-scheduler's parser (croner).

pub mod quartz;

pub use quartz::{QuartzCron, QuartzError};
