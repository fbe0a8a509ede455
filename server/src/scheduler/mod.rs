//! The scheduler (issue 5, in progress): persisted cron schedules that run
//! reconciliations and scripts. So far: Quartz expressions, checked field by
//! field and translated for tokio-cron-scheduler's parser (croner), and the
//! schedule documents in Wren's shape with their fire times.

pub mod quartz;
pub mod schedule;

pub use quartz::{QuartzCron, QuartzError};
pub use schedule::{Invoke, MisfirePolicy, Schedule, ScheduleError, Timing};
