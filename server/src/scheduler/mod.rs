//! The scheduler: persisted cron schedules that run
//! reconciliations and scripts. `quartz.rs` checks Quartz expressions field
//! by field; `schedule.rs` reads schedule documents in Wren's shape and
//! computes fire times in their time zone and window; `runtime.rs` fires
//! them: a tick once per store (claimed), no overlap when
//! `concurrentExecution` is false (a run lease), missed ticks by the misfire
//! policy, every firing recorded as an execution.

pub mod quartz;
pub mod runtime;
pub mod schedule;

pub use quartz::{QuartzCron, QuartzError};
pub use runtime::{ScheduleView, Scheduler, SchedulerError};
pub use schedule::{Invoke, MisfirePolicy, Schedule, ScheduleError, Timing};
