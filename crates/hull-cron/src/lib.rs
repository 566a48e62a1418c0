//! Hyper Cron's model, apart from the daemon that runs it: schedules and
//! their fire times, what is due after an outage, the concurrency and
//! notification policies, and the record each run leaves.

pub mod plan;
pub mod policy;
pub mod record;
pub mod schedule;

pub use plan::{due, Due};
pub use policy::{Concurrency, Notify};
pub use record::{rfc3339, CronSpec, CronView, Run, Status};
pub use schedule::{Schedule, ScheduleError};
