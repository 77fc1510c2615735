//! The jobs wing: scheduled and by-hand SSH jobs over EC2 instances found by tag.
//!
//! A job file ([`spec`], with [`schedule`] and [`calendar`]) names a [`target`]; a run resolves it to
//! hosts, fans out over them ([`runner`], through `crate::ssh`), records every host ([`execute`],
//! [`history`]) and shows the result ([`report`]). The daemon fires jobs through the [`scheduler`];
//! people use the [`commands`]. The wing's settings are `[run]` ([`settings`]), its records the
//! `runs`, `hosts` and `commands` tables, its series the `opsd_runs…` family ([`metrics`]). With
//! `[cluster]`, each firing is claimed in the shared table first ([`claims`]), so one replica runs it.

pub mod calendar;
pub mod claims;
pub mod commands;
pub mod cron_fields;
pub mod execute;
pub mod history;
pub mod metrics;
pub mod outcome;
pub mod report;
pub mod runner;
pub mod schedule;
#[cfg(test)]
mod schedule_table;
pub mod scheduler;
pub mod script;
pub mod settings;
pub mod spec;
pub mod target;
