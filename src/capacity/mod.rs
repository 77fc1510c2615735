//! The Spot Fleet capacity controller: every `interval`, observe the ECS cluster and the fleet
//! ([`observe`]), decide ([`policy`], pure), record the decision, and act ([`act`]) unless `dry_run`.
//! Runs inside `opsd daemon` when the config has a `[capacity]` section. One decision at a time: a
//! scale-in's drain finishes (or is given up) before the next observation.

pub mod act;
pub mod observe;
pub mod policy;

use crate::config::CapacitySettings;
use crate::metrics::Metrics;
use crate::store::{DecisionRecord, Store};
use observe::{Clients, Seen};
use policy::{Action, Decision, Limits, Memory};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest wait between attempts while AWS fails (the interval doubles up to it).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub fn clients(sdk: &aws_config::SdkConfig) -> Clients {
    Clients {
        ecs: aws_sdk_ecs::Client::new(sdk),
        ec2: aws_sdk_ec2::Client::new(sdk),
        asg: aws_sdk_autoscaling::Client::new(sdk),
    }
}

pub fn limits(s: &CapacitySettings) -> Limits {
    Limits {
        target_reservation: s.target_reservation.0,
        min_capacity: f64::from(s.min_capacity),
        max_capacity: f64::from(s.max_capacity),
        max_scale_out_step: f64::from(s.max_scale_out_step),
        max_scale_in_step: f64::from(s.max_scale_in_step),
        scale_out_cooldown: s.scale_out_cooldown.0,
        scale_in_cooldown: s.scale_in_cooldown.0,
        lead_time: s.lead_time.0,
        drain_before_scale_in: s.drain_before_scale_in,
    }
}

/// Decide on one observation (also what `opsd capacity status` shows).
pub fn decide(seen: &Seen, mem: &Memory, s: &CapacitySettings, now: f64) -> Decision {
    let mut d = policy::decide(&seen.observation, &seen.fleet, mem, &limits(s), now);
    if seen.fleet_state == "modifying" && d.action != Action::Hold {
        d.reason = format!("{}; held: the fleet request is still modifying from the last change", d.reason);
        d.action = Action::Hold;
    }
    d
}

pub async fn run(s: CapacitySettings, clients: Clients, store: Store, metrics: Arc<Metrics>, stop: CancellationToken) {
    let target = s.target();
    tracing::info!(cluster = %s.cluster, target = %target, dry_run = s.dry_run, "capacity controller started");
    let clock = Instant::now();
    let mut mem = remembered(&store).await;
    let mut delay = Duration::ZERO;
    let mut backoff = s.interval.0;
    // Holds are recorded at most this often (every decision that acts is recorded).
    const HOLD_RECORD_EVERY: Duration = Duration::from_secs(300);
    let mut last_hold: Option<Instant> = None;
    let mut last_dry: Option<(Instant, String)> = None;
    // What a previous process left half done (or an undo that failed) is finished first.
    let mut unfinished = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
        }
        delay = s.interval.0;
        if unfinished {
            unfinished = !recover(&clients, &store, &s.cluster, &target).await;
        }
        let seen = match observe::observe(&clients, &s.cluster, &target).await {
            Ok(seen) => {
                backoff = s.interval.0;
                seen
            }
            Err(e) => {
                tracing::error!(cluster = %s.cluster, target = %target, "capacity: {e}; retrying in {backoff:?}");
                metrics.capacity_decision("none", "observe_failed");
                delay = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let now = clock.elapsed().as_secs_f64();
        let res = policy::reservation(&seen.observation.instances);
        if policy::below_target(&seen.observation, &seen.fleet.types, s.target_reservation.0) {
            mem.below_target_since.get_or_insert(now);
        } else {
            mem.below_target_since = None;
        }
        mem.trend.push(now, policy::demand(&seen.observation, &seen.fleet.types));
        let d = decide(&seen, &mem, &s, now);
        metrics.capacity_observed(res, seen.observation.unplaced.len(), seen.fleet.target, seen.fleet.fulfilled);
        let (kind, to, victims) = action_parts(&d.action, seen.fleet.target);
        // What `opsd capacity status` shows as the daemon's view: every evaluation, replaced.
        let rec = |outcome: &str| decision_record(&seen, &d, outcome, s.dry_run);
        let latest = rec("evaluated");
        let since = mem
            .below_target_since
            .map(|t| chrono::Utc::now() - chrono::Duration::milliseconds(((now - t) * 1000.0) as i64));
        if let Err(e) = store.set_capacity_latest(latest, since, scope(&s)).await {
            tracing::warn!(cluster = %s.cluster, "capacity: cannot record the latest evaluation for `opsd capacity status`: {e}");
        }
        if kind == "hold" {
            last_dry = None;
            tracing::debug!(cluster = %s.cluster, "capacity: {}", d.reason);
            metrics.capacity_decision(kind, "held");
            if last_hold.is_none_or(|t| t.elapsed() >= HOLD_RECORD_EVERY) {
                last_hold = Some(Instant::now());
                record(&store, rec("held")).await;
            }
            continue;
        }
        last_hold = None;
        if s.dry_run {
            // Nothing is done, so the same decision comes every interval: it is logged and recorded
            // when it changes, and otherwise as often as holds are.
            let what = format!("{kind} {to} {victims:?}");
            let again = last_dry.as_ref().is_some_and(|(t, w)| *w == what && t.elapsed() < HOLD_RECORD_EVERY);
            metrics.capacity_decision(kind, "dry_run");
            if again {
                tracing::debug!(cluster = %s.cluster, "capacity (dry_run, nothing done): {}", d.reason);
            } else {
                tracing::info!(cluster = %s.cluster, target = %target, "capacity (dry_run, nothing done): {}", d.reason);
                record(&store, rec("dry_run")).await;
                last_dry = Some((Instant::now(), what));
            }
            continue;
        }
        if stop.is_cancelled() {
            break;
        }
        tracing::info!(cluster = %s.cluster, target = %target, "capacity: {}", d.reason);
        // Recorded before acting: if opsd dies meanwhile, the next start finds it `started` and
        // puts a scale-in's victims back to work.
        let id = record(&store, rec("started")).await;
        if id.is_none() && kind == "scale_in" {
            // Unrecorded, a crash mid-drain could not be undone at the next start: not started.
            tracing::error!(cluster = %s.cluster, "capacity: the scale-in is not started, since it could not be recorded");
            metrics.capacity_decision(kind, "failed");
            delay = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        // Capacity is whole units: up when adding, down when removing (rounding a scale-in up would
        // leave the fleet short of its target after the termination, and it would launch again).
        let to_units = match d.action {
            Action::ScaleIn { .. } => to.floor().max(0.0) as u32,
            _ => to.ceil().max(0.0) as u32,
        };
        let result = match &d.action {
            Action::ScaleOut { .. } => act::set_target(&clients, &target, to_units).await.map_err(act::ActError::from),
            Action::ScaleIn { victims, .. } => {
                let members: Vec<observe::Member> =
                    victims.iter().filter_map(|v| seen.members.get(v).cloned()).collect();
                let plan = act::ScaleIn {
                    cluster: &s.cluster,
                    target: &target,
                    from: seen.raw_target.round().max(0.0) as u32,
                    to: to_units,
                    victims: &members,
                    drain: s.drain_before_scale_in,
                    drain_timeout: s.drain_timeout.0,
                    daemon_groups: &seen.daemon_groups,
                };
                act::scale_in(&clients, plan, &stop).await
            }
            Action::Hold => Ok(()),
        };
        // A scale-in attempt starts the cooldown whatever came of it: a drain that timed out is not
        // retried at once, and a half-done one is not followed by another.
        if let Action::ScaleIn { .. } = d.action {
            mem.last_scale_in = Some(clock.elapsed().as_secs_f64());
            mem.below_target_since = None;
        }
        match &result {
            Ok(()) => {
                if let Action::ScaleOut { .. } = d.action {
                    mem.last_scale_out = Some(now);
                }
                metrics.capacity_decision(kind, "acted");
                finish(&store, id, "acted", None).await;
            }
            Err(e) => {
                tracing::error!(cluster = %s.cluster, target = %target, "capacity: acting on the decision failed: {e}");
                metrics.capacity_decision(kind, "failed");
                if e.left_draining() {
                    // Still `started`: recovery puts the victims back to ACTIVE at the next turn.
                    unfinished = true;
                    finish(&store, id, "started", Some(e.to_string())).await;
                } else {
                    finish(&store, id, "failed", Some(e.to_string())).await;
                }
                delay = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::info!("capacity controller stopped");
}

/// Cooldowns survive a restart: the last scale-out and scale-in acted on, from the store, on this
/// process's clock (seconds since start, so an earlier one is negative).
pub async fn remembered(store: &Store) -> Memory {
    let mut mem = Memory::default();
    let Ok(decisions) = store.decisions(200).await else { return mem };
    let now = chrono::Utc::now();
    let ago = |at: chrono::DateTime<chrono::Utc>| -((now - at).num_milliseconds() as f64 / 1000.0);
    for d in decisions.iter().filter(|d| matches!(d.outcome.as_str(), "acted" | "failed" | "started" | "interrupted")) {
        match d.action.as_str() {
            "scale_out" if mem.last_scale_out.is_none() && d.outcome == "acted" => mem.last_scale_out = Some(ago(d.at)),
            // From when acting on it ended, as the running controller counts it (a drain can be long).
            "scale_in" if mem.last_scale_in.is_none() => mem.last_scale_in = Some(ago(d.ended_at.unwrap_or(d.at))),
            _ => {}
        }
    }
    mem
}

/// Finish the decisions left `started` (opsd stopped while acting, or putting a scale-in's victims
/// back to ACTIVE failed). How far a scale-in got cannot be known, so its victims that still run
/// and are still DRAINING go back to ACTIVE (a drained instance left so is paid for and runs
/// nothing; the policy decides afresh); a scale-out needs nothing, targets being absolute. This
/// undoes opsd's own half-done action, so it runs with `dry_run` too. Returns whether all is done.
async fn recover(c: &Clients, store: &Store, cluster: &str, target: &crate::config::CapacityTarget) -> bool {
    let rows = match store.unfinished_decisions().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(cluster, "capacity: cannot read unfinished decisions: {e}");
            return false;
        }
    };
    let mut done = true;
    for (id, d) in rows {
        if d.action != "scale_in" {
            let why = "opsd stopped while acting on it; targets are absolute, so the next decision sets it again";
            done &= finish(store, Some(id), "interrupted", Some(why.into())).await;
            continue;
        }
        let ids: Vec<String> = d.victims.split(',').filter(|v| !v.is_empty()).map(String::from).collect();
        let back = match observe::members_of(c, cluster, &ids).await {
            Ok(members) => act::reactivate(c, cluster, target, &members).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match back {
            Ok(back) => {
                let what = if back.is_empty() {
                    "no victim that still runs was left DRAINING".to_string()
                } else {
                    format!("{} set back to ACTIVE", back.join(", "))
                };
                let (outcome, error) = match &d.error {
                    Some(e) => ("failed", format!("{e}; then: {what}")),
                    None => ("interrupted", format!("opsd stopped while acting on it; {what}")),
                };
                tracing::warn!(cluster, victims = %d.victims, "capacity: an unfinished scale-in: {error}");
                done &= finish(store, Some(id), outcome, Some(error)).await;
            }
            Err(e) => {
                tracing::error!(
                    cluster,
                    victims = %d.victims,
                    "capacity: cannot put the victims of an unfinished scale-in back to ACTIVE: {e}; retrying at the next decision"
                );
                done = false;
            }
        }
    }
    done
}

/// Record the outcome of decision `id`; false when the store refused it.
async fn finish(store: &Store, id: Option<i64>, outcome: &str, error: Option<String>) -> bool {
    let Some(id) = id else { return true };
    match store.finish_decision(id, outcome, error).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("capacity: cannot record the outcome of decision {id}: {e}");
            false
        }
    }
}

/// How long the running controller may go without recording an evaluation: a few intervals, a
/// whole scale-in (the drain, the fleet applying the target, the termination) or the longest backoff.
pub fn stale_after(s: &CapacitySettings) -> Duration {
    (s.interval.0 * 3).max(s.drain_timeout.0 + Duration::from_secs(180)).max(MAX_BACKOFF) + Duration::from_secs(60)
}

/// The cluster and fleet a controller evaluates, as recorded with its latest evaluation: what
/// `opsd capacity status` compares with its own config before using it.
pub fn scope(s: &CapacitySettings) -> String {
    format!("{} on {}", s.cluster, s.target())
}

/// A decision's kind as recorded (`hold`, `scale_out`, `scale_in`), the capacity it sets (the
/// current one for a hold) and its victims.
pub fn action_parts(action: &Action, current: f64) -> (&'static str, f64, Vec<String>) {
    match action {
        Action::Hold => ("hold", current, Vec::new()),
        Action::ScaleOut { to } => ("scale_out", *to, Vec::new()),
        Action::ScaleIn { to, victims } => ("scale_in", *to, victims.clone()),
    }
}

/// Record a decision; its id when the store took it.
async fn record(store: &Store, r: DecisionRecord) -> Option<i64> {
    match store.record_decision(r).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!("capacity: cannot record the decision: {e}");
            None
        }
    }
}

/// The record of decision `d` on observation `seen`, with its outcome so far.
fn decision_record(seen: &Seen, d: &Decision, outcome: &str, dry_run: bool) -> DecisionRecord {
    let (action, to, victims) = action_parts(&d.action, seen.fleet.target);
    DecisionRecord {
        at: chrono::Utc::now(),
        action: action.into(),
        from_capacity: seen.fleet.target,
        to_capacity: to,
        victims: victims.join(","),
        reservation: d.reservation,
        unplaced: seen.observation.unplaced.len() as i64,
        reason: d.reason.clone(),
        outcome: outcome.into(),
        error: None,
        dry_run,
        ended_at: (outcome != "started").then(chrono::Utc::now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a restart the scale-in cooldown counts from when the last scale-in ended (its drain may
    /// have taken minutes), as the running controller counts it, not from when it was decided.
    #[tokio::test]
    async fn the_scale_in_cooldown_counts_from_the_end_of_the_action() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let decided = chrono::Utc::now() - chrono::Duration::seconds(600);
        let d = DecisionRecord {
            at: decided,
            action: "scale_in".into(),
            from_capacity: 4.0,
            to_capacity: 2.0,
            victims: "i-1,i-2".into(),
            reservation: 30.0,
            unplaced: 0,
            reason: "test".into(),
            outcome: "started".into(),
            error: None,
            dry_run: false,
            ended_at: None,
        };
        let id = store.record_decision(d).await.unwrap();
        // Still started (a crash mid-drain): from the decision.
        let since = -remembered(&store).await.last_scale_in.unwrap();
        assert!((595.0..700.0).contains(&since), "{since}");
        store.finish_decision(id, "acted", None).await.unwrap();
        let since = -remembered(&store).await.last_scale_in.unwrap();
        assert!((0.0..60.0).contains(&since), "{since}");
        assert!(store.unfinished_decisions().await.unwrap().is_empty());
    }
}
