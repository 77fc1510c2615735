//! The jobs wing's settings: `[run]` in the config (defaults for every job's `[run]`), and what a
//! job file's missing values are taken from.

use crate::ssh;
use crate::units::{ByteSize, HumanDuration, Limit};
use serde::Deserialize;
use std::time::Duration;

/// `[run]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunDefaults {
    pub timeout: HumanDuration,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    pub output_limit: ByteSize,
}

impl Default for RunDefaults {
    fn default() -> Self {
        RunDefaults {
            // Per host, all commands: maintenance commands finish in minutes; a hung one must not hold a run.
            timeout: HumanDuration(Duration::from_secs(300)),
            // sshd-side CPU, not opsd, is the limit of a fan-out: 50 keeps a small fleet host responsive.
            max_concurrency: Limit::Count(50),
            // Stop widening a run once a tenth of the fleet has failed: a bad command stays contained.
            max_errors: Limit::Percent(10.0),
            // Enough for a useful log tail per stream; bounded memory at any concurrency.
            output_limit: ByteSize(64 * 1024),
        }
    }
}

/// The config's `[ssh]` and `[run]`: where a job file's missing values come from.
#[derive(Debug, Clone, Default)]
pub struct JobDefaults {
    pub ssh: ssh::Defaults,
    pub run: RunDefaults,
}
