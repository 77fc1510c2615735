//! The jobs wing's commands: `opsd run` ([`run`]), `opsd history` ([`history`]), `opsd jobs` and
//! `opsd validate` (here). Each returns the [`Exit`] the process ends with and prints what the user
//! needs: diagnostics to stderr, results to stdout.

mod history;
pub mod run;

pub use history::{cluster_history, history};
pub use run::run;

use super::history::RunHistory;
use super::schedule::Schedule;
use super::settings::JobDefaults;
use super::{calendar, spec};
use crate::diag::print_diags;
use crate::exit::Exit;
use crate::outln;
use crate::output::OutputFormat;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job's name (its file stem in jobs_dir) or a path to a job file.
    pub job: String,
    /// Resolve and list the target hosts without connecting to them.
    #[arg(long)]
    pub dry_run: bool,
    /// Override the job's max_concurrency (hosts at once).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrency: Option<u64>,
    /// Run on the hosts listed in FILE instead of resolving the job's target in EC2: one host per
    /// line, `ADDRESS` or `INSTANCE_ID ADDRESS`; `#` starts a comment. (Benchmarks, break-glass.)
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<std::path::PathBuf>,
    /// text: live lines and a summary; json: one document with every host's result on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only this job.
    pub job: Option<String>,
    /// List the firings after this instant instead of now (RFC 3339, e.g. 2026-03-08T00:00:00Z
    /// or 2026-03-08T00:00:00-05:00).
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// How many firings to list for each job (1-1000).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub next: u16,
}

fn parse_instant(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e}; write an RFC 3339 instant with its offset, like 2026-03-08T00:00:00Z"))
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only runs of this job.
    pub job: Option<String>,
    /// Show one run in full.
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// With [cluster]: only this replica's own runs, from its own store (the default lists the
    /// whole cluster's firings from the cluster table).
    #[arg(long)]
    pub local: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `opsd validate`: every job file of `paths` (default: the jobs directory) checked with the
/// daemon's own parser. `config_name` names the config that was already loaded.
pub fn validate(paths: &[PathBuf], jobs_dir: &Path, defaults: &JobDefaults, config_name: &str) -> Exit {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    let targets = if paths.is_empty() { vec![jobs_dir.to_path_buf()] } else { paths.to_vec() };
    for p in targets {
        if p.is_dir() {
            match spec::files_in(&p) {
                Ok(f) => files.extend(f),
                Err(d) => diags.push(d),
            }
        } else {
            files.push(p);
        }
    }
    let mut bad = 0;
    for f in &files {
        if let Err(d) = spec::load(f, defaults) {
            bad += 1;
            diags.extend(d);
        }
    }
    print_diags(&diags);
    outln!("config {config_name}: ok; {} job files checked, {bad} with errors", files.len());
    if diags.is_empty() {
        Exit::Ok
    } else {
        Exit::Usage
    }
}

/// `opsd jobs`: every job (or `args.job`) with its schedule, target and next firings after now
/// (or `args.at`), in the job's zone and UTC, each with what a DST change did to it. `runs` is the
/// history when one exists (rate schedules count from a job's last firing).
pub async fn list(args: JobsArgs, jobs_dir: &Path, defaults: &JobDefaults, runs: Option<RunHistory>) -> Exit {
    let mut files = match spec::files_in(jobs_dir) {
        Ok(f) => f,
        Err(d) => {
            print_diags(&[d]);
            return Exit::Usage;
        }
    };
    if let Some(job) = &args.job {
        files.retain(|f| f.file_stem().is_some_and(|s| s.to_string_lossy() == *job));
        if files.is_empty() {
            eprintln!("opsd: no job named {job:?} in {}; `opsd jobs` lists them", jobs_dir.display());
            return Exit::Usage;
        }
    }
    let from = args.at.unwrap_or_else(chrono::Utc::now);
    outln!("{:<24} {:<28} {:<40} DESCRIPTION", "JOB", "SCHEDULE", "TARGET");
    for f in files {
        match spec::load(&f, defaults) {
            Ok(j) => {
                let tags: Vec<String> = j.target.tags.0.iter().map(|(k, v)| format!("{k}={}", v.join("|"))).collect();
                let target = format!(
                    "{} [{}]",
                    tags.join(","),
                    j.target.states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                );
                let Some(t) = &j.timing else {
                    outln!("{:<24} {:<28} {:<40} {}", j.name, "(by hand)", target, j.description);
                    continue;
                };
                let schedule = if t.timezone == chrono_tz::Tz::UTC {
                    t.schedule.to_string()
                } else {
                    format!("{} {}", t.schedule, t.timezone)
                };
                outln!("{:<24} {:<28} {:<40} {}", j.name, schedule, target, j.description);
                let last = match &runs {
                    Some(s) => s.last_firing(&j.name).await.ok().flatten().filter(|l| *l <= from),
                    None => None,
                };
                let anchor = last.unwrap_or(from);
                let firings = calendar::upcoming(&t.schedule, from, t.timezone, anchor, args.next.into());
                let mut prev = from;
                for at in &firings {
                    let local = at.with_timezone(&t.timezone);
                    let note = calendar::dst_note(&t.schedule, prev, *at, t.timezone).map(|n| format!("  {n}"));
                    outln!(
                        "  next {}  ({} UTC){}",
                        local.format("%Y-%m-%d %H:%M:%S %Z"),
                        at.format("%Y-%m-%d %H:%M:%S"),
                        note.unwrap_or_default()
                    );
                    prev = *at;
                }
                if firings.len() < usize::from(args.next) {
                    outln!("  (no later firing: the schedule's years end)");
                }
                if last.is_none() && matches!(t.schedule, Schedule::Rate { .. }) {
                    outln!("  (no firing recorded yet: a rate counts from when the daemon loads the job)");
                }
            }
            Err(d) => {
                let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                outln!("{name:<24} INVALID: `opsd validate {}` shows why", f.display());
                print_diags(&d);
            }
        }
    }
    Exit::Ok
}

/// The recent firings of every job in the jobs directory, as the cluster table records them, for
/// `opsd cluster status`: newest first, with the replica that ran each.
pub async fn cluster_section(
    jobs_dir: &Path,
    table: &crate::cluster::table::Table,
) -> crate::cluster::commands::Section {
    const RECENT: usize = 20;
    let names: Vec<String> = spec::files_in(jobs_dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let mut firings = Vec::new();
    let mut errors = Vec::new();
    for name in &names {
        match super::claims::recent(table, name, RECENT).await {
            Ok(f) => firings.extend(f),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    firings.sort_by(|a, b| b.scheduled_for.cmp(&a.scheduled_for));
    firings.truncate(RECENT);
    let mut text = vec![format!("recent firings ({} jobs):", names.len())];
    text.push(format!(
        "{:<26} {:<24} {:<16} {:<10} {:>5} {:>5} {:>6}",
        "SCHEDULED", "JOB", "REPLICA", "STATE", "HOSTS", "OK", "RUN"
    ));
    for f in &firings {
        text.push(format!(
            "{:<26} {:<24} {:<16} {:<10} {:>5} {:>5} {:>6}",
            f.scheduled_for,
            f.job,
            f.replica,
            f.state,
            f.hosts.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            f.hosts_ok.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            f.run_id.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
        ));
    }
    text.extend(errors.iter().map(|e| format!("cannot read the firings of {e}")));
    crate::cluster::commands::Section { key: "firings", json: serde_json::json!(firings), text }
}
