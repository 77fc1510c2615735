//! The scheduler: the table of jobs with their next firings ([`table`]), kept current from the jobs
//! directory (a broken file keeps its job's last good version), and each due firing carried out on
//! its own task ([`firing`]). The daemon drives it: it sleeps until [`Scheduler::until_next`], calls
//! [`Scheduler::fire_due`], and [`Scheduler::load`] when asked to reload.

pub mod firing;
pub mod table;

use super::history::RunHistory;
use super::outcome::TriggerKind;
use super::schedule::Schedule;
use super::settings::JobDefaults;
use super::spec::Job;
use super::{calendar, claims, spec};
use crate::cluster::Cluster;
use chrono::{DateTime, Utc};
use firing::{Context, Firing};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use table::{Changes, Loaded, Table};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The scheduler wakes at least this often, so a wall-clock jump (NTP, suspend) is seen promptly.
const MAX_SLEEP: Duration = Duration::from_secs(30);

pub struct Scheduler {
    /// The loaded jobs' names, for the cluster's abandoned-firing sweep.
    names: Arc<RwLock<Vec<String>>>,
    jobs_dir: PathBuf,
    defaults: JobDefaults,
    table: Table,
    ctx: Arc<Context>,
    /// Where firings run; the daemon waits for it at shutdown.
    tracker: TaskTracker,
}

impl Scheduler {
    /// In a cluster, the sweep of firings abandoned by gone replicas starts too (on `tracker`).
    pub fn new(jobs_dir: PathBuf, defaults: JobDefaults, ctx: Context, tracker: TaskTracker) -> Scheduler {
        let names = Arc::new(RwLock::new(Vec::new()));
        if let Some(c) = &ctx.cluster {
            tracker.spawn(sweep_abandoned(c.clone(), names.clone(), ctx.stop.clone()));
        }
        Scheduler { names, jobs_dir, defaults, table: Table::default(), ctx: Arc::new(ctx), tracker }
    }

    /// The config's `[ssh]` and `[run]` changed: job files read from now on resolve against these.
    pub fn set_defaults(&mut self, defaults: JobDefaults) {
        self.defaults = defaults;
    }

    /// Read every job file and apply them to the table.
    pub async fn load(&mut self) {
        let files = match spec::files_in(&self.jobs_dir) {
            Ok(f) => f,
            Err(d) => {
                tracing::error!("{d}; keeping the {} jobs already loaded", self.table.entries.len());
                return;
            }
        };
        let defaults = self.defaults.clone();
        // File reads and parsing off the runtime: a jobs directory on a slow disk must not stall firing.
        let loaded = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|f| match spec::load(&f, &defaults) {
                    Ok(j) => Loaded::Good(Box::new(j)),
                    Err(diags) => {
                        let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                        Loaded::Bad { name, diags }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for l in &loaded {
            if let Loaded::Bad { name, diags } = l {
                self.ctx.metrics.job_file_error(name);
                for d in diags {
                    tracing::error!(job = %name, "{d}");
                }
            }
        }
        // Rate schedules keep their phase across restarts: alone, they count from the job's last
        // recorded firing; in a cluster, from the anchor the first replica to load the schedule set.
        let now = Utc::now();
        let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut shared: HashMap<String, DateTime<Utc>> = HashMap::new();
        for l in &loaded {
            let Loaded::Good(j) = l else { continue };
            match (&self.ctx.cluster, j.timing.as_ref().map(|t| &t.schedule)) {
                (Some(c), Some(Schedule::Rate { .. })) => {
                    let text = j.timing.as_ref().map(|t| t.schedule.text()).unwrap_or_default();
                    match claims::shared_anchor(c, &j.name, text, now).await {
                        Ok(t) => {
                            shared.insert(j.name.clone(), t);
                        }
                        Err(e) => {
                            tracing::error!(job = %j.name, "cluster: cannot read the rate's shared anchor: {e}; counting from now")
                        }
                    }
                }
                (None, _) if !self.table.entries.contains_key(&j.name) => {
                    if let Ok(Some(t)) = self.ctx.runs.last_firing(&j.name).await {
                        last.insert(j.name.clone(), t);
                    }
                }
                _ => {}
            }
        }
        let anchor = |j: &Job, changed: bool| match &self.ctx.cluster {
            Some(_) => shared.get(&j.name).copied(),
            None if changed => None,
            None => last.get(&j.name).copied(),
        };
        let changes = self.table.apply(loaded, now, &anchor);
        log_changes(&changes);
        self.ctx.metrics.set_jobs_loaded(self.table.entries.len());
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = self.table.entries.keys().cloned().collect();
    }

    /// Jobs with `catch_up = true` whose last recorded firing was followed by a missed one run once now.
    pub async fn catch_up(&self) {
        let now = Utc::now();
        for e in self.table.entries.values() {
            let Some(t) = e.job.timing.as_ref().filter(|t| t.catch_up) else { continue };
            let last = match self.ctx.runs.last_run_firing(&e.job.name).await {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(job = %e.job.name, "catch_up: cannot read the last firing: {err}");
                    continue;
                }
            };
            if let Some(missed) = calendar::latest_missed(&t.schedule, last, now, t.timezone, e.anchor) {
                tracing::info!(job = %e.job.name, last = %last, missed = %missed, "catch_up: a firing was missed while opsd was down; running once now");
                let f = Firing { job: e.job.clone(), slot: e.slot.clone(), at: missed, kind: TriggerKind::CatchUp };
                self.tracker.spawn(firing::fire(self.ctx.clone(), f));
            }
        }
    }

    /// How long until the earliest firing (at most [`MAX_SLEEP`]).
    pub fn until_next(&self) -> Duration {
        let now = Utc::now();
        self.table
            .next_firing()
            .map(|(_, t)| (t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
    }

    /// Start every firing that is due, each on its own task.
    pub fn fire_due(&mut self) {
        for (job, slot, at) in self.table.take_due(Utc::now()) {
            tracing::info!(job = %job.name, firing = %at, "firing");
            let f = Firing { job, slot, at, kind: TriggerKind::Schedule };
            self.tracker.spawn(firing::fire(self.ctx.clone(), f));
        }
    }

    /// How many jobs are loaded, and how many of them have a next firing.
    pub fn counts(&self) -> (usize, usize) {
        (self.table.entries.len(), self.table.scheduled())
    }

    /// One line for systemd's status: the jobs and the next firing.
    pub fn status(&self) -> String {
        let (n, scheduled) = self.counts();
        match self.table.next_firing() {
            Some((job, at)) => format!("{n} jobs, {scheduled} scheduled; next: {job} at {}", at.to_rfc3339()),
            None => format!("{n} jobs, none scheduled"),
        }
    }

    /// The history firings are recorded in.
    pub fn runs(&self) -> &RunHistory {
        &self.ctx.runs
    }
}

/// In a cluster: once this replica has watched the members for a whole timeout, and again each time
/// one dies or starts anew, record the firings they left `running` as interrupted.
async fn sweep_abandoned(c: Cluster, names: Arc<RwLock<Vec<String>>>, stop: CancellationToken) {
    let mut swept: Option<BTreeSet<(String, String, bool)>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(c.heartbeat) => {}
            _ = stop.cancelled() => return,
        }
        if !c.judging() {
            continue;
        }
        let picture = c.liveness.picture();
        if swept.as_ref() == Some(&picture) {
            continue;
        }
        let jobs = names.read().unwrap_or_else(|p| p.into_inner()).clone();
        match claims::interrupt_abandoned(&c, &jobs).await {
            Ok(_) => swept = Some(picture),
            Err(e) => tracing::warn!("cluster: looking for firings left by gone replicas: {e}; trying again"),
        }
    }
}

fn log_changes(c: &Changes) {
    for (what, names) in [("added", &c.added), ("changed", &c.changed), ("removed", &c.removed)] {
        if !names.is_empty() {
            tracing::info!("jobs {what}: {}", names.join(", "));
        }
    }
    if !c.kept.is_empty() {
        tracing::warn!("invalid job files, their last good version stays scheduled: {}", c.kept.join(", "));
    }
    if !c.rejected.is_empty() {
        tracing::warn!(
            "invalid job files, not scheduled (fix them; `opsd validate` shows why): {}",
            c.rejected.join(", ")
        );
    }
}
