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
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use table::{Changes, Entry, Loaded, Table};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The scheduler wakes at least this often, so a wall-clock jump (NTP, suspend) is seen promptly.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// One read of the cluster table at a load or start (a rate's shared anchor, the last firing for
/// catch_up): it must not stall firing and the watchdog.
const TABLE_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Scheduler {
    jobs_dir: PathBuf,
    defaults: JobDefaults,
    table: Table,
    ctx: Arc<Context>,
    /// Where firings run; the daemon waits for it at shutdown.
    tracker: TaskTracker,
    /// In a cluster: some rate job's shared anchor could not be read at the last load, so that job
    /// waits (unscheduled, or at its previous version) for a load that reads it.
    anchors_pending: bool,
}

impl Scheduler {
    /// In a cluster, the sweep of work abandoned by gone replicas starts too (on `tracker`).
    pub fn new(jobs_dir: PathBuf, defaults: JobDefaults, ctx: Context, tracker: TaskTracker) -> Scheduler {
        if let Some(c) = &ctx.cluster {
            tracker.spawn(sweep_abandoned(c.clone(), ctx.stop.clone()));
        }
        Scheduler { jobs_dir, defaults, table: Table::default(), ctx: Arc::new(ctx), tracker, anchors_pending: false }
    }

    /// Whether a load should be tried again (a cluster's shared anchor could not be read).
    pub fn wants_reload(&self) -> bool {
        self.anchors_pending
    }

    /// The config's `[ssh]` and `[run]` changed: job files read from now on resolve against these.
    pub fn set_defaults(&mut self, defaults: JobDefaults) {
        self.defaults = defaults;
    }

    /// Read every job file and apply them to the table.
    pub async fn load(&mut self) {
        let (dir, defaults) = (self.jobs_dir.clone(), self.defaults.clone());
        // Listing, reading and parsing off the runtime: a jobs directory on a slow disk must not
        // stall firing.
        let loaded = tokio::task::spawn_blocking(move || {
            spec::files_in(&dir).map(|files| load_files(files, |f| spec::load(f, &defaults)))
        })
        .await;
        let loaded = match loaded {
            Ok(Err(d)) => {
                tracing::error!("{d}; keeping the {} jobs already loaded", self.table.entries.len());
                return;
            }
            Ok(Ok(l)) => Ok(l),
            Err(e) => Err(e),
        };
        // Never an empty table for a failed load: every job keeps its last good version.
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    "loading the job files failed ({e}); keeping the {} jobs already loaded",
                    self.table.entries.len()
                );
                return;
            }
        };
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
        if self.ctx.cluster.is_none() {
            for l in &loaded {
                if let Loaded::Good(j) = l {
                    if !self.table.entries.contains_key(&j.name) {
                        if let Ok(Some(t)) = self.ctx.runs.last_firing(&j.name).await {
                            last.insert(j.name.clone(), t);
                        }
                    }
                }
            }
        }
        let (loaded, shared) = match self.ctx.cluster.clone() {
            Some(c) => self.shared_anchors(&c, loaded, now).await,
            None => (loaded, HashMap::new()),
        };
        let anchor = |j: &Job, changed: bool| match &self.ctx.cluster {
            Some(_) => shared.get(&j.name).copied(),
            None if changed => None,
            None => last.get(&j.name).copied(),
        };
        let changes = self.table.apply(loaded, now, &anchor);
        log_changes(&changes);
        self.ctx.metrics.set_jobs_loaded(self.table.entries.len());
    }

    /// The shared anchors of the rate jobs of `loaded`, read at once (each within [`TABLE_READ_TIMEOUT`]).
    /// A job whose anchor cannot be read is never scheduled from another phase (its firings would
    /// be other keys than the other replicas', so it would run twice): it stays at its previous
    /// version, or unscheduled, until a later load reads the anchor.
    async fn shared_anchors(
        &mut self,
        c: &Cluster,
        loaded: Vec<Loaded>,
        now: DateTime<Utc>,
    ) -> (Vec<Loaded>, HashMap<String, DateTime<Utc>>) {
        let mut reads = tokio::task::JoinSet::new();
        for l in &loaded {
            let Loaded::Good(j) = l else { continue };
            let Some(t) = j.timing.as_ref().filter(|t| matches!(t.schedule, Schedule::Rate { .. })) else { continue };
            // Only a job that is new here or whose schedule changed takes an anchor at this load.
            let known = self.table.entries.get(&j.name).map(|e| Entry::schedule_key(&e.job));
            if known == Some(Entry::schedule_key(j)) {
                continue;
            }
            let (c, name, text) = (c.clone(), j.name.clone(), t.schedule.text().to_string());
            reads.spawn(async move {
                let r = tokio::time::timeout(TABLE_READ_TIMEOUT, claims::shared_anchor(&c, &name, &text, now)).await;
                (name, r)
            });
        }
        let mut shared = HashMap::new();
        let mut failed = Vec::new();
        while let Some(done) = reads.join_next().await {
            let Ok((name, r)) = done else { continue };
            match r {
                Ok(Ok(t)) => {
                    shared.insert(name, t);
                }
                Ok(Err(e)) => {
                    tracing::error!(job = %name, "cluster: cannot read the rate's shared anchor: {e}; not scheduled from another phase, trying again");
                    failed.push(name);
                }
                Err(_) => {
                    tracing::error!(job = %name, "cluster: reading the rate's shared anchor took longer than {TABLE_READ_TIMEOUT:?}; trying again");
                    failed.push(name);
                }
            }
        }
        self.anchors_pending = !failed.is_empty();
        let loaded = loaded
            .into_iter()
            .map(|l| match l {
                Loaded::Good(j) if failed.contains(&j.name) => Loaded::Pending { name: j.name.clone() },
                l => l,
            })
            .collect();
        (loaded, shared)
    }

    /// Jobs with `catch_up = true` whose last recorded firing was followed by a missed one run once now.
    pub async fn catch_up(&self) {
        let now = Utc::now();
        for e in self.table.entries.values() {
            let Some(t) = e.job.timing.as_ref().filter(|t| t.catch_up) else { continue };
            let local = match self.ctx.runs.last_run_firing(&e.job.name).await {
                Ok(l) => l,
                Err(err) => {
                    tracing::warn!(job = %e.job.name, "catch_up: cannot read the last firing: {err}");
                    continue;
                }
            };
            // In a cluster the last firing is the cluster's: what the other replicas ran while
            // this one was down was not missed. Unreadable: this replica's own (the claim of a
            // catch-up firing is still the firing's own key, so it runs once at most).
            let shared = match &self.ctx.cluster {
                Some(c) => {
                    match tokio::time::timeout(TABLE_READ_TIMEOUT, claims::last_ran(&c.table, &e.job.name)).await {
                        Ok(Ok(t)) => t,
                        Ok(Err(err)) => {
                            tracing::warn!(job = %e.job.name, "catch_up: cannot read the cluster's last firing: {err}; counting from this replica's");
                            None
                        }
                        Err(_) => {
                            tracing::warn!(job = %e.job.name, "catch_up: the cluster's last firing took longer than {TABLE_READ_TIMEOUT:?} to read; counting from this replica's");
                            None
                        }
                    }
                }
                None => None,
            };
            let Some(last) = local.max(shared) else { continue };
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

/// In a cluster, every third of the member timeout: read the members afresh (a round whose read
/// fails judges nobody), then end the work gone replicas left (see [`claims::sweep`]).
async fn sweep_abandoned(c: Cluster, stop: CancellationToken) {
    let every = (c.liveness.timeout() / 3).max(c.heartbeat);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match crate::cluster::members::list(&c.table).await {
            Ok(members) => c.liveness.observe(&members),
            Err(e) => {
                tracing::warn!("cluster: reading the members for the sweep: {e}; skipping this round");
                continue;
            }
        }
        if let Err(e) = claims::sweep(&c).await {
            tracing::warn!("cluster: looking for work left by gone replicas: {e}; trying again");
        }
    }
}

fn log_changes(c: &Changes) {
    for (what, names) in [("added", &c.added), ("changed", &c.changed), ("removed", &c.removed)] {
        if !names.is_empty() {
            tracing::info!("jobs {what}: {}", names.join(", "));
        }
    }
    if !c.pending.is_empty() {
        tracing::warn!(
            "cluster: rate jobs waiting for their shared anchor (at their previous version, if any): {}",
            c.pending.join(", ")
        );
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

/// Load each of `files` with `load`. A file whose loading panics (a bug in opsd) is a bad file with
/// a diagnostic saying so, like a file that fails validation: it keeps its job's last good version,
/// and the other files load.
fn load_files(
    files: Vec<PathBuf>,
    load: impl Fn(&std::path::Path) -> Result<Job, Vec<crate::diag::Diagnostic>>,
) -> Vec<Loaded> {
    files
        .into_iter()
        .map(|f| {
            let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&f))) {
                Ok(Ok(j)) => Loaded::Good(Box::new(j)),
                Ok(Err(diags)) => Loaded::Bad { name, diags },
                Err(_) => {
                    let why = "opsd failed while reading this file (a bug: please report it with the file); its last good version stays loaded";
                    Loaded::Bad { name, diags: vec![crate::diag::Diagnostic::file(&f, why)] }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, 3.9: a file whose loading panics is a bad file (its job keeps its last good
    /// version); the others load.
    #[test]
    fn a_panicking_file_is_a_bad_file_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let job = "[target]\ntags = { A = \"b\" }\n[run]\ncommands = [\"true\"]\n";
        let files: Vec<PathBuf> = ["a", "boom", "c"]
            .iter()
            .map(|n| {
                let p = dir.path().join(format!("{n}.toml"));
                std::fs::write(&p, job).unwrap();
                p
            })
            .collect();
        let mut defaults = JobDefaults::default();
        defaults.ssh.user = Some("ec2-user".into());
        defaults.ssh.identity_file = Some("/etc/opsd/key".into());
        let loaded = load_files(files, |f| {
            if f.ends_with("boom.toml") {
                panic!("a parser bug");
            }
            spec::load(f, &defaults)
        });
        let summary: Vec<String> = loaded
            .iter()
            .map(|l| match l {
                Loaded::Good(j) => format!("good {}", j.name),
                Loaded::Bad { name, diags } => format!("bad {name}: {}", diags[0].message),
                Loaded::Pending { name } => format!("pending {name}"),
            })
            .collect();
        assert_eq!(summary[0], "good a");
        assert!(summary[1].starts_with("bad boom: opsd failed while reading this file"), "{summary:?}");
        assert_eq!(summary[2], "good c");
    }
}
