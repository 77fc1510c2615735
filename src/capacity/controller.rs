//! The capacity controller, an explicit event loop: every `interval` (longer, backing off, while AWS
//! fails) it observes the cluster and the fleet, decides ([`super::policy`], pure), records the
//! evaluation for `opsd capacity status`, records the decision and acts on it unless `dry_run`.
//! One decision at a time: a scale-in's drain finishes (or is given up) before the next tick.
//!
//! [`Controller`] does the I/O; [`State`] holds what it remembers between ticks (the policy's
//! clock and memory, the backoff, the recording cadence) and is what the paused-time tests drive.

use super::act::{self, ActError};
use super::fence::Fence;
use super::fleet::CapacityTarget;
use super::history::{DecisionHistory, DecisionKind, DecisionOutcome, DecisionRecord, Victims};
use super::metrics::CapacityMetrics;
use super::observe::{self, Seen};
use super::policy::{self, Action, Decision, Memory};
use super::settings::CapacitySettings;
use super::Clients;
use crate::backoff::Backoff;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest wait between attempts while AWS fails (the interval doubles up to it).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Holds, and a dry-run decision that does not change, are recorded at most this often (every
/// decision that acts is recorded): enough to see the controller alive, few enough rows.
pub const RECORD_EVERY: Duration = Duration::from_secs(300);

/// What wakes the controller.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Time to observe and decide.
    Tick,
    /// The daemon is stopping.
    Stop,
}

/// A decision's kind, the capacity it sets (the current one for a hold) and its victims.
pub fn action_parts(action: &Action, current: f64) -> (DecisionKind, f64, Vec<String>) {
    match action {
        Action::Hold => (DecisionKind::Hold, current, Vec::new()),
        Action::ScaleOut { to } => (DecisionKind::ScaleOut, *to, Vec::new()),
        Action::ScaleIn { to, victims } => (DecisionKind::ScaleIn, *to, victims.clone()),
    }
}

/// Decide on one observation (also what `opsd capacity status` shows): the policy, held while the
/// fleet is still applying the last change.
pub fn decide(seen: &Seen, mem: &Memory, s: &CapacitySettings, now: f64) -> Decision {
    let mut d = policy::decide(&seen.observation, &seen.fleet, mem, &s.limits(), now);
    if seen.fleet_state == "modifying" && d.action != Action::Hold {
        d.reason = format!("{}; held: the fleet request is still modifying from the last change", d.reason);
        d.action = Action::Hold;
    }
    d
}

/// How long the running controller may go without recording an evaluation: a few intervals, a
/// whole scale-in (the drain, the fleet applying the target, the termination) or the longest backoff.
pub fn stale_after(s: &CapacitySettings) -> Duration {
    (s.interval.0 * 3).max(s.drain_timeout.0 + Duration::from_secs(180)).max(MAX_BACKOFF) + Duration::from_secs(60)
}

/// What the controller remembers between ticks.
#[derive(Debug)]
pub struct State {
    /// The policy's clock: seconds since this started.
    clock: Instant,
    pub mem: Memory,
    interval: Duration,
    /// When the next tick comes.
    next: Instant,
    /// How long after the current tick ends the next one comes.
    delay: Duration,
    backoff: Backoff,
    /// When a hold was last recorded.
    last_hold: Option<Instant>,
    /// When a dry-run decision was last recorded, and which.
    last_dry: Option<(Instant, String)>,
}

impl State {
    /// The first tick comes at once.
    pub fn new(interval: Duration, mem: Memory) -> State {
        let now = Instant::now();
        State {
            clock: now,
            mem,
            interval,
            next: now,
            delay: interval,
            backoff: Backoff::new(interval, MAX_BACKOFF),
            last_hold: None,
            last_dry: None,
        }
    }

    /// Seconds on the policy's clock.
    pub fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// The next tick, or the stop.
    pub async fn next_event(&self, stop: &CancellationToken) -> Event {
        tokio::select! {
            _ = tokio::time::sleep_until(self.next) => Event::Tick,
            _ = stop.cancelled() => Event::Stop,
        }
    }

    /// A tick began: unless it fails, the next one comes an interval after it ends.
    pub fn ticked(&mut self) {
        self.delay = self.interval;
    }

    /// The next tick comes `wait` after this one ends (a follower looks again soon).
    pub fn wait(&mut self, wait: Duration) {
        self.delay = wait;
    }

    /// Take in cooldowns another leader noted (the later of its and this memory's).
    pub fn shared(&mut self, last_scale_out: Option<DateTime<Utc>>, last_scale_in: Option<DateTime<Utc>>) {
        let (now, wall) = (self.now(), Utc::now());
        let ago = |at: DateTime<Utc>| now - (wall - at).num_milliseconds() as f64 / 1000.0;
        let later = |mine: Option<f64>, theirs: Option<DateTime<Utc>>| match (mine, theirs.map(ago)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.mem.last_scale_out = later(self.mem.last_scale_out, last_scale_out);
        self.mem.last_scale_in = later(self.mem.last_scale_in, last_scale_in);
    }

    /// The tick failed (AWS, the store): the next one waits the backoff, which doubles.
    pub fn failed(&mut self) {
        self.delay = self.backoff.fail();
    }

    /// The tick ended (a scale-in's drain may have taken minutes): the wait starts now.
    pub fn tick_ended(&mut self) {
        self.next = Instant::now() + self.delay;
    }

    /// The wait the next failure brings.
    pub fn backoff(&self) -> Duration {
        self.backoff.next_wait()
    }

    /// An observation came in: the backoff starts over, the below-target clock and the demand trend
    /// move, and the policy decides. Returns when (on the policy's clock) and what.
    pub fn observed(&mut self, seen: &Seen, s: &CapacitySettings) -> (f64, Decision) {
        self.backoff.reset();
        let now = self.now();
        if policy::below_target(&seen.observation, &seen.fleet.types, s.target_reservation.0) {
            self.mem.below_target_since.get_or_insert(now);
        } else {
            self.mem.below_target_since = None;
        }
        self.mem.trend.push(now, policy::demand(&seen.observation, &seen.fleet.types));
        (now, decide(seen, &self.mem, s, now))
    }

    /// A hold: whether to record it (at most every [`RECORD_EVERY`]).
    pub fn record_hold(&mut self) -> bool {
        self.last_dry = None;
        if self.last_hold.is_none_or(|t| t.elapsed() >= RECORD_EVERY) {
            self.last_hold = Some(Instant::now());
            return true;
        }
        false
    }

    /// A dry-run decision described by `what`: whether to log and record it (when it changes, and
    /// otherwise at most every [`RECORD_EVERY`]). Nothing is done, so the same one comes every interval.
    pub fn record_dry_run(&mut self, what: String) -> bool {
        self.last_hold = None;
        let again = self.last_dry.as_ref().is_some_and(|(t, w)| *w == what && t.elapsed() < RECORD_EVERY);
        if !again {
            self.last_dry = Some((Instant::now(), what));
        }
        !again
    }

    /// A decision that acts is about to be carried out.
    pub fn acting(&mut self) {
        self.last_hold = None;
    }

    /// Acting on `action` (decided at `decided`, on the policy's clock) ended; `ok` if it succeeded.
    /// A scale-in attempt starts the cooldown whatever came of it: a drain that timed out is not
    /// retried at once, and a half-done one is not followed by another.
    pub fn acted(&mut self, action: &Action, decided: f64, ok: bool) {
        match action {
            Action::ScaleIn { .. } => {
                self.mem.last_scale_in = Some(self.now());
                self.mem.below_target_since = None;
            }
            Action::ScaleOut { .. } if ok => self.mem.last_scale_out = Some(decided),
            _ => {}
        }
        if !ok {
            self.failed();
        }
    }
}

/// The controller with its AWS clients, history and series.
pub struct Controller {
    settings: CapacitySettings,
    target: CapacityTarget,
    clients: Clients,
    history: DecisionHistory,
    metrics: CapacityMetrics,
    stop: CancellationToken,
    state: State,
    /// What a previous process left half done (or an undo that failed) is finished first.
    unfinished: bool,
    /// The capacity lease (in a cluster): only its holder decides and acts.
    fence: Fence,
    /// The epoch this controller last led in (alone: 0).
    led: Option<u64>,
    /// A step of this controller was fenced: the journal is read again before its next decision.
    reread: bool,
    /// Instances already reported as never registered (each is logged once).
    unregistered: std::collections::HashSet<String>,
}

/// Log, once per instance, the fleet's instances that never registered with the cluster (`noted`
/// keeps those already logged that are still unregistered).
fn note_unregistered(
    noted: &mut std::collections::HashSet<String>,
    never: &[(String, u64)],
    settings: &CapacitySettings,
    target: &CapacityTarget,
) {
    for (id, age) in never {
        if noted.insert(id.clone()) {
            tracing::warn!(
                cluster = %settings.cluster,
                instance = %id,
                "capacity: instance {id} of {target} has not registered with the cluster {age}s after its launch (register_timeout {}); it no longer counts as launching. Check its ECS agent (ECS_CLUSTER in its user data, its instance role) or terminate it",
                humantime::format_duration(settings.register_timeout.0)
            );
        }
    }
    noted.retain(|id| never.iter().any(|(n, _)| n == id));
}

/// How often a follower looks whether it leads now (a look at memory, no I/O).
const FOLLOWER_POLL: Duration = Duration::from_secs(1);

impl Controller {
    pub fn new(
        settings: CapacitySettings,
        clients: Clients,
        history: DecisionHistory,
        metrics: CapacityMetrics,
        fence: Fence,
        stop: CancellationToken,
    ) -> Controller {
        let state = State::new(settings.interval.0, Memory::default());
        let target = settings.target();
        Controller {
            settings,
            target,
            clients,
            history,
            metrics,
            stop,
            state,
            unfinished: true,
            fence,
            led: None,
            reread: false,
            unregistered: std::collections::HashSet::new(),
        }
    }

    /// Tick until the daemon stops. The cooldowns are read back from the history first, so they
    /// survive a restart.
    pub async fn run(mut self) {
        let s = &self.settings;
        tracing::info!(cluster = %s.cluster, target = %self.target, dry_run = s.dry_run, "capacity controller started");
        self.state = State::new(s.interval.0, self.history.memory().await);
        while let Event::Tick = self.state.next_event(&self.stop).await {
            self.state.ticked();
            if self.tick().await.is_break() {
                break;
            }
            self.state.tick_ended();
        }
        tracing::info!("capacity controller stopped");
    }

    /// One observation, decision and (unless held or dry-run) action.
    async fn tick(&mut self) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        match self.fence.leading() {
            None => {
                if self.led.take().is_some() {
                    tracing::warn!(cluster = %self.settings.cluster, "capacity: this replica no longer leads; following");
                }
                self.metrics.leading(false);
                self.state.wait(FOLLOWER_POLL.min(self.settings.interval.0));
                return Continue(());
            }
            Some(epoch) if self.led != Some(epoch) || self.reread => {
                if !self.took_over(epoch).await {
                    self.state.failed();
                    return Continue(());
                }
                self.led = Some(epoch);
                self.reread = false;
                self.metrics.leading(true);
            }
            Some(_) => {}
        }
        if self.unfinished {
            self.unfinished = !self.recover().await;
        }
        let (cluster, target) = (&self.settings.cluster, &self.target);
        let seen = match observe::observe(&self.clients, cluster, target, self.settings.register_timeout.0).await {
            Ok(seen) => seen,
            Err(e) => {
                let wait = self.state.backoff();
                tracing::error!(cluster = %cluster, target = %target, "capacity: {e}; retrying in {wait:?}");
                self.metrics.observe_failed();
                self.state.failed();
                return Continue(());
            }
        };
        note_unregistered(&mut self.unregistered, &seen.never_registered, &self.settings, &self.target);
        let (decided, d) = self.state.observed(&seen, &self.settings);
        let res = policy::reservation(&seen.observation.instances);
        self.metrics.observed(res, seen.observation.unplaced.len(), seen.fleet.target, seen.fleet.fulfilled);
        let (kind, to, victims) = action_parts(&d.action, seen.fleet.target);
        let dry_run = self.settings.dry_run;
        let rec = |outcome| decision_record(&seen, &d, outcome, dry_run);
        // What `opsd capacity status` shows as the daemon's view: every evaluation, replaced.
        let since = self
            .state
            .mem
            .below_target_since
            .map(|t| Utc::now() - chrono::Duration::milliseconds(((decided - t) * 1000.0) as i64));
        if let Err(e) = self.history.set_latest(rec(DecisionOutcome::Evaluated), since, self.settings.scope()).await {
            tracing::warn!(cluster = %cluster, "capacity: cannot record the latest evaluation for `opsd capacity status`: {e}");
        }
        if kind == DecisionKind::Hold {
            tracing::debug!(cluster = %cluster, "capacity: {}", d.reason);
            self.metrics.decision(kind, DecisionOutcome::Held);
            if self.state.record_hold() {
                self.record(rec(DecisionOutcome::Held)).await;
            }
            return Continue(());
        }
        if dry_run {
            self.metrics.decision(kind, DecisionOutcome::DryRun);
            if self.state.record_dry_run(format!("{kind} {to} {victims:?}")) {
                tracing::info!(cluster = %cluster, target = %target, "capacity (dry_run, nothing done): {}", d.reason);
                self.record(rec(DecisionOutcome::DryRun)).await;
            } else {
                tracing::debug!(cluster = %cluster, "capacity (dry_run, nothing done): {}", d.reason);
            }
            return Continue(());
        }
        self.state.acting();
        if self.stop.is_cancelled() {
            return Break(());
        }
        tracing::info!(cluster = %cluster, target = %target, "capacity: {}", d.reason);
        // Recorded before acting: if opsd dies meanwhile, the next start finds it `started` and
        // puts a scale-in's victims back to work.
        let id = self.record(rec(DecisionOutcome::Started)).await;
        if id.is_none() && kind == DecisionKind::ScaleIn {
            // Unrecorded, a crash mid-drain could not be undone at the next start: not started.
            tracing::error!(cluster = %cluster, "capacity: the scale-in is not started, since it could not be recorded");
            self.metrics.decision(kind, DecisionOutcome::Failed);
            self.state.failed();
            return Continue(());
        }
        let result = self.act(&d.action, &seen, to).await;
        self.state.acted(&d.action, decided, result.is_ok());
        match result {
            Ok(()) => {
                self.metrics.decision(kind, DecisionOutcome::Acted);
                self.finish(id, DecisionOutcome::Acted, None).await;
                if let Err(f) = self.fence.acted(kind == DecisionKind::ScaleIn, Utc::now()).await {
                    tracing::warn!(cluster = %cluster, "capacity: the cooldown is not noted for the next leader: {f}");
                }
            }
            Err(e) if e.fenced() => {
                let (cluster, target) = (&self.settings.cluster, &self.target);
                tracing::warn!(cluster = %cluster, target = %target, "capacity: the decision was not carried out: {e}");
                self.metrics.decision(kind, DecisionOutcome::Fenced);
                self.finish(id, DecisionOutcome::Fenced, Some(e.to_string())).await;
                // Whoever leads next, this replica again included (a late renewal can restore the
                // same epoch), reads the journal first and puts these victims back.
                self.reread = true;
            }
            Err(e) => {
                let (cluster, target) = (&self.settings.cluster, &self.target);
                tracing::error!(cluster = %cluster, target = %target, "capacity: acting on the decision failed: {e}");
                self.metrics.decision(kind, DecisionOutcome::Failed);
                if kind == DecisionKind::ScaleIn && !e.left_draining() {
                    // The victims are back at work (or gone): nothing for the next leader to undo.
                    if let Err(f) = self.fence.drained().await {
                        tracing::warn!(cluster = %cluster, "capacity: {f}");
                    }
                }
                if e.left_draining() {
                    // Still `started`: recovery puts the victims back to ACTIVE at the next tick.
                    self.unfinished = true;
                    self.finish(id, DecisionOutcome::Started, Some(e.to_string())).await;
                } else {
                    self.finish(id, DecisionOutcome::Failed, Some(e.to_string())).await;
                }
            }
        }
        Continue(())
    }

    /// Carry out a scale-out or scale-in to `to` capacity units.
    async fn act(&self, action: &Action, seen: &Seen, to: f64) -> Result<(), ActError> {
        // Capacity is whole units: up when adding, down when removing (rounding a scale-in up would
        // leave the fleet short of its target after the termination, and it would launch again).
        match action {
            Action::Hold => Ok(()),
            Action::ScaleOut { .. } => {
                let to = to.ceil().max(0.0) as u32;
                self.fence.confirm().await?;
                self.fence.bounded(self.target.set_target(&self.clients, to)).await?.map_err(ActError::from)
            }
            Action::ScaleIn { victims, .. } => {
                let s = &self.settings;
                let members: Vec<observe::Member> =
                    victims.iter().filter_map(|v| seen.members.get(v).cloned()).collect();
                let plan = act::ScaleIn {
                    cluster: &s.cluster,
                    target: &self.target,
                    from: seen.raw_target.round().max(0.0) as u32,
                    to: to.floor().max(0.0) as u32,
                    victims: &members,
                    drain: s.drain_before_scale_in,
                    drain_timeout: s.drain_timeout.0,
                    daemon_groups: &seen.daemon_groups,
                    fence: &self.fence,
                };
                act::scale_in(&self.clients, plan, &self.stop).await
            }
        }
    }

    /// This replica leads (in `epoch`) from now: take in the cooldowns the previous leaders noted on
    /// the lease, and put back to work the victims of a scale-in an earlier leader began (it died or
    /// was fenced mid-drain; it touches them no more). Returns false when that must be tried again.
    async fn took_over(&mut self, epoch: u64) -> bool {
        let cluster = self.settings.cluster.clone();
        let journal = match self.fence.journal().await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(cluster, "capacity: leading (epoch {epoch}), but the lease cannot be read: {e}");
                return false;
            }
        };
        self.state.shared(journal.last_scale_out, journal.last_scale_in);
        // Victims of any epoch, this one's too: no scale-in of this replica is in flight between
        // ticks, so any left in the journal were abandoned (a dead or fenced leader's).
        if let Some((ids, earlier)) = journal.victims {
            if let Err(f) = self.fence.confirm().await {
                tracing::warn!(cluster, "capacity: {f}");
                return false;
            }
            let c = &self.clients;
            let back = match observe::members_of(c, &cluster, &ids).await {
                Ok(members) => act::reactivate(c, &cluster, &self.target, &members, None, &self.fence)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match back {
                Ok(back) => tracing::warn!(
                    cluster,
                    epoch,
                    "capacity: the leader of epoch {earlier} left a scale-in of {} unfinished; {}",
                    ids.join(", "),
                    if back.is_empty() {
                        "none was left DRAINING".to_string()
                    } else {
                        format!("{} set back to ACTIVE", back.join(", "))
                    }
                ),
                Err(e) => {
                    tracing::error!(cluster, "capacity: cannot put the victims {} of the leader of epoch {earlier} back to ACTIVE: {e}; retrying", ids.join(", "));
                    return false;
                }
            }
            if let Err(f) = self.fence.drained().await {
                tracing::warn!(cluster, "capacity: {f}");
                return false;
            }
            // As for a scale-in of its own that came to nothing: the cooldown starts again.
            self.state.mem.last_scale_in = Some(self.state.now());
        }
        if self.fence.clustered() {
            tracing::info!(cluster, epoch, "capacity: this replica leads the capacity controller (epoch {epoch})");
        }
        true
    }

    /// Finish the decisions left `started` (opsd stopped while acting, or putting a scale-in's
    /// victims back to ACTIVE failed). How far a scale-in got cannot be known, so its victims that
    /// still run and are still DRAINING go back to ACTIVE (a drained instance left so is paid for and
    /// runs nothing; the policy decides afresh); a scale-out needs nothing, targets being absolute.
    /// This undoes opsd's own half-done action, so it runs with `dry_run` too. Returns whether all is done.
    async fn recover(&self) -> bool {
        let (c, cluster) = (&self.clients, self.settings.cluster.as_str());
        let rows = match self.history.unfinished().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(cluster, "capacity: cannot read unfinished decisions: {e}");
                return false;
            }
        };
        let mut done = true;
        for (id, d) in rows {
            if d.action != DecisionKind::ScaleIn {
                let why = "opsd stopped while acting on it; targets are absolute, so the next decision sets it again";
                done &= self.finish(Some(id), DecisionOutcome::Interrupted, Some(why.into())).await;
                continue;
            }
            if let Err(f) = self.fence.confirm().await {
                tracing::warn!(cluster, "capacity: an unfinished scale-in waits: {f}");
                return false;
            }
            let back = match observe::members_of(c, cluster, &d.victims.0).await {
                Ok(members) => act::reactivate(c, cluster, &self.target, &members, None, &self.fence)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let victims = d.victims.joined();
            match back {
                Ok(back) => {
                    let what = if back.is_empty() {
                        "no victim that still runs was left DRAINING".to_string()
                    } else {
                        format!("{} set back to ACTIVE", back.join(", "))
                    };
                    let (outcome, error) = match &d.error {
                        Some(e) => (DecisionOutcome::Failed, format!("{e}; then: {what}")),
                        None => (DecisionOutcome::Interrupted, format!("opsd stopped while acting on it; {what}")),
                    };
                    tracing::warn!(cluster, victims = %victims, "capacity: an unfinished scale-in: {error}");
                    done &= self.finish(Some(id), outcome, Some(error)).await;
                }
                Err(e) => {
                    tracing::error!(
                        cluster,
                        victims = %victims,
                        "capacity: cannot put the victims of an unfinished scale-in back to ACTIVE: {e}; retrying at the next decision"
                    );
                    done = false;
                }
            }
        }
        done
    }

    /// Record a decision; its id when the store took it.
    async fn record(&self, r: DecisionRecord) -> Option<i64> {
        match self.history.record(r).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!("capacity: cannot record the decision: {e}");
                None
            }
        }
    }

    /// Record the outcome of decision `id`; false when the store refused it.
    async fn finish(&self, id: Option<i64>, outcome: DecisionOutcome, error: Option<String>) -> bool {
        let Some(id) = id else { return true };
        match self.history.finish(id, outcome, error).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("capacity: cannot record the outcome of decision {id}: {e}");
                false
            }
        }
    }
}

/// The record of decision `d` on observation `seen`, with its outcome so far.
fn decision_record(seen: &Seen, d: &Decision, outcome: DecisionOutcome, dry_run: bool) -> DecisionRecord {
    let (action, to, victims) = action_parts(&d.action, seen.fleet.target);
    DecisionRecord {
        at: Utc::now(),
        action,
        from_capacity: seen.fleet.target,
        to_capacity: to,
        victims: Victims(victims),
        reservation: d.reservation,
        unplaced: seen.observation.unplaced.len() as i64,
        reason: d.reason.clone(),
        outcome,
        error: None,
        dry_run,
        ended_at: outcome.ended().then(Utc::now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::policy::{Fleet, Instance, InstanceType, Observation, Resources};
    use expect_test::expect;
    use std::collections::{HashMap, HashSet};

    fn settings(extra: &str) -> CapacitySettings {
        toml::from_str(&format!("cluster = \"c\"\nspot_fleet_request_id = \"sfr-1\"\nmax_capacity = 10\n{extra}"))
            .unwrap()
    }

    /// c5.large instances, each running the given tasks, and tasks waiting for room.
    fn seen(instances: &[&[(u32, u32)]], unplaced: usize) -> Seen {
        let ty = InstanceType { name: "c5.large".into(), resources: Resources::new(2048, 3704), weight: 1.0 };
        let instances: Vec<Instance> = instances
            .iter()
            .enumerate()
            .map(|(i, tasks)| {
                let tasks: Vec<Resources> = tasks.iter().map(|(c, m)| Resources::new(*c, *m)).collect();
                let used = tasks.iter().fold(Resources::default(), |a, t| a.plus(*t));
                Instance {
                    id: format!("i-{i}"),
                    instance_type: ty.name.clone(),
                    registered: ty.resources,
                    remaining: Resources::new(ty.resources.cpu - used.cpu, ty.resources.mem - used.mem),
                    tasks,
                    draining: false,
                    pinned: false,
                    in_fleet: true,
                    daemon: Resources::default(),
                }
            })
            .collect();
        let n = instances.len() as f64;
        Seen {
            observation: Observation { instances, unplaced: vec![Resources::new(1024, 1024); unplaced] },
            fleet: Fleet { target: n, fulfilled: n, types: vec![ty] },
            members: HashMap::new(),
            short_services: Vec::new(),
            fleet_state: "active".into(),
            daemon_groups: HashSet::new(),
            raw_target: n,
            raw_fulfilled: n,
            never_registered: Vec::new(),
        }
    }

    /// Seconds since `start`, as the test's clock (tokio's, paused) reads them.
    fn secs(start: Instant) -> u64 {
        (Instant::now() - start).as_secs()
    }

    async fn advance(s: u64) {
        tokio::time::sleep(Duration::from_secs(s)).await;
    }

    /// The first tick comes at once; failures wait the interval, then twice as long each time up to
    /// MAX_BACKOFF; an observation starts the backoff over; the wait after a long tick (a drain)
    /// counts from its end; the stop wins over a pending tick.
    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_an_observation_resets_it() {
        let (stop, s) = (CancellationToken::new(), settings(""));
        let mut st = State::new(s.interval.0, Memory::default());
        let start = Instant::now();
        let mut ticks = Vec::new();
        for _ in 0..7 {
            assert_eq!(st.next_event(&stop).await, Event::Tick);
            ticks.push(secs(start));
            st.ticked();
            st.failed();
            st.tick_ended();
        }
        assert_eq!(ticks, [0, 30, 90, 210, 450, 750, 1050]);
        // A good tick: the next comes an interval later, and the next failure waits the interval again.
        st.next_event(&stop).await;
        let at = secs(start);
        st.ticked();
        st.observed(&seen(&[&[(1024, 1024)]], 0), &s);
        st.tick_ended();
        st.next_event(&stop).await;
        assert_eq!(secs(start) - at, 30);
        assert_eq!(st.backoff(), Duration::from_secs(30));
        // A tick that takes 200 s: the next one 30 s after it ended.
        let at = secs(start);
        st.ticked();
        advance(200).await;
        st.tick_ended();
        st.next_event(&stop).await;
        assert_eq!(secs(start) - at, 230);
        st.ticked();
        st.tick_ended();
        stop.cancel();
        assert_eq!(st.next_event(&stop).await, Event::Stop);
        assert_eq!(secs(start) - at, 230, "the stop does not wait for the tick");
    }

    /// A scale-out starts its cooldown when it succeeds (not when it fails); a scale-in's cooldown
    /// (and the below-target clock) counts from when acting on it ended, however long the drain took.
    #[tokio::test(start_paused = true)]
    async fn cooldowns_run_on_the_controllers_clock() {
        let s = settings("scale_out_cooldown = \"60s\"\nscale_in_cooldown = \"600s\"");
        let mut st = State::new(s.interval.0, Memory::default());
        // One full instance and a task waiting: scale out.
        let full = seen(&[&[(2048, 3704)]], 1);
        let (t, d) = st.observed(&full, &s);
        assert_eq!(d.action, Action::ScaleOut { to: 2.0 }, "{}", d.reason);
        st.acted(&d.action, t, false);
        let (t, d) = st.observed(&full, &s);
        assert_eq!(d.action, Action::ScaleOut { to: 2.0 }, "a failed scale-out starts no cooldown: {}", d.reason);
        st.acted(&d.action, t, true);
        advance(30).await;
        let (_, d) = st.observed(&full, &s);
        assert_eq!(d.action, Action::Hold);
        expect![[r#"reservation 100.0% (target 80%), 1 instances, 1 unplaced tasks, capacity 1 (fulfilled 1): needs 1.0 more units but the scale-out cooldown has 30s left"#]]
            .assert_eq(&d.reason);
        advance(30).await;
        assert_eq!(st.observed(&full, &s).1.action, Action::ScaleOut { to: 2.0 });

        // Two idle instances: below target, so one may go once the cooldown has passed.
        let mut st = State::new(s.interval.0, Memory::default());
        let idle = seen(&[&[(512, 512)], &[]], 0);
        st.observed(&idle, &s);
        advance(599).await;
        let (_, d) = st.observed(&idle, &s);
        expect![[r#"reservation 12.5% (target 80%), 2 instances, 0 unplaced tasks, capacity 2 (fulfilled 2): below target for 599s of the 600s scale-in cooldown"#]]
            .assert_eq(&d.reason);
        advance(1).await;
        let (t, d) = st.observed(&idle, &s);
        assert_eq!(d.action, Action::ScaleIn { to: 1.0, victims: vec!["i-1".into()] }, "{}", d.reason);
        // The drain takes 200 s; the cooldown counts from its end.
        advance(200).await;
        st.acted(&d.action, t, true);
        st.observed(&idle, &s);
        advance(599).await;
        assert_eq!(st.observed(&idle, &s).1.action, Action::Hold);
        advance(1).await;
        assert!(matches!(st.observed(&idle, &s).1.action, Action::ScaleIn { .. }));
    }

    /// Holds, and a dry-run decision that does not change, are recorded at most every RECORD_EVERY;
    /// a changed dry-run decision at once; and one kind of decision in between starts the other over.
    #[tokio::test(start_paused = true)]
    async fn holds_and_unchanged_dry_runs_are_recorded_every_five_minutes() {
        let mut st = State::new(Duration::from_secs(30), Memory::default());
        assert!(st.record_hold(), "the first hold");
        advance(299).await;
        assert!(!st.record_hold());
        advance(1).await;
        assert!(st.record_hold(), "five minutes after the last recorded");
        assert!(st.record_dry_run("scale_out 4".into()), "a decision after a hold");
        advance(30).await;
        assert!(!st.record_dry_run("scale_out 4".into()), "unchanged");
        assert!(st.record_dry_run("scale_out 5".into()), "changed");
        advance(299).await;
        assert!(!st.record_dry_run("scale_out 5".into()));
        advance(1).await;
        assert!(st.record_dry_run("scale_out 5".into()), "unchanged, five minutes on");
        assert!(st.record_hold(), "a hold after a dry-run decision");
        assert!(st.record_dry_run("scale_out 5".into()), "the same decision after a hold");
        assert!(st.record_hold());
        st.acting();
        assert!(st.record_hold(), "a hold after acting");
    }
}
