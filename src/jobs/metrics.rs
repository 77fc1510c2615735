//! The jobs wing's Prometheus series: runs and their hosts, durations, skipped firings, job files
//! that failed to load, each job's last success and the runs since, and how many jobs are loaded.

use super::outcome::{HostStatus, RunOutcome, SkipReason};
use crate::metrics::{Labels, Registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::AtomicU64;

fn run_buckets() -> Histogram {
    // 0.5 s .. ~68 min: a one-host job to a long fleet-wide maintenance.
    Histogram::new(exponential_buckets(0.5, 2.0, 14))
}

/// The jobs wing's series; cheap to clone (each series is shared).
#[derive(Clone)]
pub struct JobMetrics {
    runs: Family<Labels, Counter>,
    hosts: Family<Labels, Counter>,
    run_duration: Family<Labels, Histogram, fn() -> Histogram>,
    skipped: Family<Labels, Counter>,
    job_file_errors: Family<Labels, Counter>,
    last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    since_success: Family<Labels, Gauge>,
    jobs_loaded: Gauge,
}

impl JobMetrics {
    pub fn register(registry: &mut Registry) -> JobMetrics {
        let m = JobMetrics {
            runs: Family::default(),
            hosts: Family::default(),
            run_duration: Family::new_with_constructor(run_buckets),
            skipped: Family::default(),
            job_file_errors: Family::default(),
            last_success: Family::default(),
            since_success: Family::default(),
            jobs_loaded: Gauge::default(),
        };
        registry.register("runs", "Runs by job and outcome", m.runs.clone());
        registry.register("hosts", "Host results by job and status", m.hosts.clone());
        registry.register("run_duration_seconds", "Run duration by job", m.run_duration.clone());
        registry.register(
            "firings_skipped",
            "Scheduled firings that started no run, by job and reason",
            m.skipped.clone(),
        );
        registry.register(
            "job_file_errors",
            "Job files that failed validation at load or reload",
            m.job_file_errors.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When each job's last successful run ended (Unix time)",
            m.last_success.clone(),
        );
        registry.register(
            "runs_since_success",
            "Runs of each job since its last successful one (0 after a success): the alert for a job failing period after period",
            m.since_success.clone(),
        );
        registry.register("jobs_loaded", "Jobs currently scheduled or runnable", m.jobs_loaded.clone());
        m
    }

    /// A run ended: its outcome, its hosts' statuses, its duration.
    pub fn run_ended(
        &self,
        job: &str,
        outcome: RunOutcome,
        hosts: &[(HostStatus, usize)],
        seconds: f64,
        end_unix: f64,
    ) {
        self.runs.get_or_create(&vec![("job", job.to_string()), ("outcome", outcome.to_string())]).inc();
        for (status, n) in hosts {
            if *n > 0 {
                self.hosts
                    .get_or_create(&vec![("job", job.to_string()), ("status", status.to_string())])
                    .inc_by(*n as u64);
            }
        }
        self.run_duration.get_or_create(&vec![("job", job.to_string())]).observe(seconds);
        let since = self.since_success.get_or_create(&vec![("job", job.to_string())]);
        if outcome == RunOutcome::Succeeded {
            self.last_success.get_or_create(&vec![("job", job.to_string())]).set(end_unix);
            since.set(0);
        } else {
            since.inc();
        }
    }

    /// A firing started no run.
    pub fn firing_skipped(&self, job: &str, reason: SkipReason) {
        self.skipped.get_or_create(&vec![("job", job.to_string()), ("reason", reason.to_string())]).inc();
    }

    pub fn job_file_error(&self, job: &str) {
        self.job_file_errors.get_or_create(&vec![("job", job.to_string())]).inc();
    }

    pub fn set_jobs_loaded(&self, n: usize) {
        self.jobs_loaded.set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{registry, Exporter};

    #[test]
    fn series_carry_their_labels_and_values() {
        let mut reg = registry();
        let m = JobMetrics::register(&mut reg);
        let (ok, failed) = (HostStatus::Ok, HostStatus::Failed);
        m.run_ended("backup", RunOutcome::Succeeded, &[(ok, 3), (failed, 0)], 1.5, 1_700_000_000.0);
        m.run_ended("backup", RunOutcome::Failed, &[(ok, 1), (failed, 2)], 0.7, 1_700_000_100.0);
        m.run_ended("rotate", RunOutcome::Failed, &[(failed, 1)], 0.1, 1_700_000_100.0);
        m.run_ended("rotate", RunOutcome::Failed, &[(failed, 1)], 0.1, 1_700_000_200.0);
        m.firing_skipped("backup", SkipReason::Overlap);
        m.job_file_error("broken");
        m.set_jobs_loaded(2);
        let text = Exporter::new(reg).encode();
        for want in [
            "opsd_runs_total{job=\"backup\",outcome=\"succeeded\"} 1",
            "opsd_runs_total{job=\"backup\",outcome=\"failed\"} 1",
            "opsd_hosts_total{job=\"backup\",status=\"ok\"} 4",
            "opsd_hosts_total{job=\"backup\",status=\"failed\"} 2",
            "opsd_run_duration_seconds_count{job=\"backup\"} 2",
            "opsd_firings_skipped_total{job=\"backup\",reason=\"overlap\"} 1",
            "opsd_job_file_errors_total{job=\"broken\"} 1",
            "opsd_last_success_timestamp_seconds{job=\"backup\"} 1700000000.0",
            "opsd_jobs_loaded 2",
            "opsd_runs_since_success{job=\"backup\"} 1",
            "opsd_runs_since_success{job=\"rotate\"} 2",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
