//! The admin web console (`/admin`): HTTP tests per room, and the real
//! browser's walk through the cookbook's sync sample.

mod browser;
