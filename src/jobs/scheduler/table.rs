//! The daemon's table of jobs: what each job's next firing is, and how a reload changes the table.
//! A file that fails validation keeps its job's last good version; no file can stop another.

use crate::diag::Diagnostic;
use crate::jobs::calendar;
use crate::jobs::spec::Job;
use chrono::{DateTime, SubsecRound, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Per-job state that outlives reloads of its file: the overlap policy's lock.
#[derive(Debug)]
pub struct Slot {
    /// One permit: held by the running run under `skip` and `queue` (not taken under `allow`).
    pub permit: Arc<Semaphore>,
    /// A firing waits for the permit (`queue`); a second waiting one is skipped.
    pub queued: AtomicBool,
    /// When the run holding the permit started, for skip reasons.
    pub running_since: Mutex<Option<DateTime<Utc>>>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot { permit: Arc::new(Semaphore::new(1)), queued: AtomicBool::new(false), running_since: Mutex::new(None) }
    }
}

#[derive(Debug)]
pub struct Entry {
    pub job: Arc<Job>,
    /// The next firing; `None` for jobs without a schedule or whose schedule has ended.
    pub next: Option<DateTime<Utc>>,
    /// Where a rate schedule counts from: its last recorded firing, or when it was first loaded.
    pub anchor: DateTime<Utc>,
    pub slot: Arc<Slot>,
}

impl Entry {
    /// What decides whether a reload keeps a job's next firing and anchor: its schedule and zone.
    pub fn schedule_key(job: &Job) -> Option<(String, chrono_tz::Tz)> {
        job.timing.as_ref().map(|t| (t.schedule.text().to_string(), t.timezone))
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = self.job.timing.as_ref()?;
        calendar::next_after(&t.schedule, after, t.timezone, self.anchor)
    }
}

/// One job file as read at a (re)load.
pub enum Loaded {
    Good(Box<Job>),
    Bad {
        name: String,
        diags: Vec<Diagnostic>,
    },
    /// Good, but in a cluster its rate's shared anchor could not be read: it keeps its previous
    /// version, if any, until a load reads it.
    Pending {
        name: String,
    },
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Broken files whose last good version stays scheduled.
    pub kept: Vec<String>,
    /// Broken files with no good version: not scheduled.
    pub rejected: Vec<String>,
    /// Waiting for their shared anchor (kept at their previous version, if any).
    pub pending: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Table {
    pub entries: BTreeMap<String, Entry>,
}

impl Table {
    /// Apply a full read of the jobs directory at `now`. `anchor` gives where a job's rate schedule
    /// counts from, when it is new (`false`: its last recorded firing, so a restart keeps the phase)
    /// or its schedule changed (`true`); `None` is `now`. In a cluster it is the shared anchor.
    pub fn apply(
        &mut self,
        loaded: Vec<Loaded>,
        now: DateTime<Utc>,
        anchor: &dyn Fn(&Job, bool) -> Option<DateTime<Utc>>,
    ) -> Changes {
        // Whole seconds: a rate first loaded now fires on the second, as `opsd jobs` shows it.
        let now = now.trunc_subsecs(0);
        let mut changes = Changes::default();
        let mut seen = std::collections::BTreeSet::new();
        for l in loaded {
            match l {
                Loaded::Good(job) => {
                    let job = Arc::new(*job);
                    seen.insert(job.name.clone());
                    match self.entries.get_mut(&job.name) {
                        Some(e) => {
                            let same_schedule = Entry::schedule_key(&e.job) == Entry::schedule_key(&job);
                            if e.job != job {
                                changes.changed.push(job.name.clone());
                            }
                            if !same_schedule {
                                e.anchor = anchor(&job, true).unwrap_or(now);
                            }
                            e.job = job;
                            if !same_schedule {
                                e.next = e.next_after(now);
                            }
                        }
                        None => {
                            let anchor = anchor(&job, false).unwrap_or(now);
                            let mut e = Entry { job: job.clone(), next: None, anchor, slot: Arc::default() };
                            e.next = e.next_after(now);
                            changes.added.push(job.name.clone());
                            self.entries.insert(job.name.clone(), e);
                        }
                    }
                }
                Loaded::Bad { name, .. } => {
                    seen.insert(name.clone());
                    if self.entries.contains_key(&name) {
                        changes.kept.push(name);
                    } else {
                        changes.rejected.push(name);
                    }
                }
                Loaded::Pending { name } => {
                    seen.insert(name.clone());
                    changes.pending.push(name);
                }
            }
        }
        let gone: Vec<String> = self.entries.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for name in gone {
            self.entries.remove(&name);
            changes.removed.push(name);
        }
        changes
    }

    /// The earliest next firing of any job.
    pub fn next_firing(&self) -> Option<(&str, DateTime<Utc>)> {
        self.entries.iter().filter_map(|(n, e)| e.next.map(|t| (n.as_str(), t))).min_by_key(|(_, t)| *t)
    }

    /// Take the firings due at `now`: each due job once (a daemon that slept through several
    /// firings fires once, not once per missed firing), and move each to its next firing after `now`.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<(Arc<Job>, Arc<Slot>, DateTime<Utc>)> {
        let mut due = Vec::new();
        for e in self.entries.values_mut() {
            if let Some(at) = e.next.filter(|t| *t <= now) {
                due.push((e.job.clone(), e.slot.clone(), at));
                e.next = e.next_after(now.max(at));
            }
        }
        due
    }

    pub fn scheduled(&self) -> usize {
        self.entries.values().filter(|e| e.next.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::settings::JobDefaults;

    fn job(name: &str, schedule: &str) -> Loaded {
        let text = format!(
            "schedule = \"{schedule}\"\n[target]\ntags = {{ A = \"b\" }}\n[ssh]\nuser = \"u\"\nidentity_file = \"/k\"\n[run]\ncommands = [\"true\"]\n"
        );
        let file = std::path::PathBuf::from(format!("/jobs/{name}.toml"));
        match crate::jobs::spec::parse(&file, &text, &JobDefaults::default()) {
            Ok(j) => Loaded::Good(Box::new(j)),
            Err(diags) => Loaded::Bad { name: name.into(), diags },
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reload_adds_changes_keeps_and_removes() {
        let mut table = Table::default();
        let none = |_: &Job, _: bool| None;
        let now = t("2026-11-25T10:00:30Z");
        let c =
            table.apply(vec![job("a", "* * * * *"), job("b", "rate(5 minutes)"), job("c", "0 3 * * *")], now, &none);
        assert_eq!(c.added, ["a", "b", "c"]);
        assert_eq!(table.entries["a"].next, Some(t("2026-11-25T10:01:00Z")));
        assert_eq!(table.entries["b"].next, Some(t("2026-11-25T10:05:30Z")));
        let slot_a = table.entries["a"].slot.clone();

        // a unchanged, b broken (keeps its last good version and its next firing), c's schedule
        // changes, c's old next is replaced, d is new and broken, e is new.
        let later = t("2026-11-25T10:00:40Z");
        let c = table.apply(
            vec![
                job("a", "* * * * *"),
                job("b", "rate(5 minute)"),
                job("c", "0 4 * * *"),
                job("d", "nope"),
                job("e", "@hourly"),
            ],
            later,
            &none,
        );
        assert_eq!(c.kept, ["b"]);
        assert_eq!(c.rejected, ["d"]);
        assert_eq!(c.changed, ["c"]);
        assert_eq!(c.added, ["e"]);
        assert!(Arc::ptr_eq(&slot_a, &table.entries["a"].slot), "a's overlap state survives the reload");
        assert_eq!(table.entries["a"].next, Some(t("2026-11-25T10:01:00Z")), "an unchanged job keeps its firing");
        assert_eq!(table.entries["b"].next, Some(t("2026-11-25T10:05:30Z")));
        assert_eq!(table.entries["c"].next, Some(t("2026-11-26T04:00:00Z")));
        assert!(!table.entries.contains_key("d"));

        let c = table.apply(vec![job("a", "* * * * *")], later, &none);
        assert_eq!(c.removed, ["b", "c", "e"]);
    }

    #[test]
    fn rate_schedules_keep_their_phase_across_restarts() {
        let mut table = Table::default();
        let last = |_: &Job, _: bool| Some(t("2026-11-25T09:52:00Z"));
        table.apply(vec![job("b", "rate(5 minutes)")], t("2026-11-25T10:00:30Z"), &last);
        assert_eq!(table.entries["b"].next, Some(t("2026-11-25T10:02:00Z")));
    }

    #[test]
    fn due_jobs_fire_once_and_move_on() {
        let mut table = Table::default();
        table.apply(vec![job("a", "* * * * *"), job("c", "0 3 * * *")], t("2026-11-25T10:00:30Z"), &|_, _| None);
        assert!(table.take_due(t("2026-11-25T10:00:59Z")).is_empty());
        // Asleep for three minutes: one firing, at the first missed time; the next is after now.
        let due = table.take_due(t("2026-11-25T10:03:10Z"));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.name.as_str(), due[0].2), ("a", t("2026-11-25T10:01:00Z")));
        assert_eq!(table.entries["a"].next, Some(t("2026-11-25T10:04:00Z")));
        assert_eq!(table.next_firing(), Some(("a", t("2026-11-25T10:04:00Z"))));
    }
}
