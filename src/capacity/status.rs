//! `opsd capacity status`: "why is it not scaling?" answered: the reservation and unplaced demand
//! now, the fleet's capacity, the running daemon's latest evaluation, what the policy decides now,
//! and the last decisions with their reasons.

use super::controller::{action_parts, decide, stale_after};
use super::history::{DecisionHistory, DecisionKind, DecisionRecord};
use super::observe;
use super::policy;
use super::settings::CapacitySettings;
use super::Clients;
use crate::exit::Exit;
use crate::outln;
use crate::output::OutputFormat;
use crate::store::Store;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use std::future::Future;

#[derive(Debug, Subcommand)]
pub enum CapacityCommand {
    /// Reservation, unplaced demand, current and desired capacity now, and the last decisions with
    /// their reasons: "why is it not scaling?" answered.
    #[command(
        after_help = "Examples:\n  opsd capacity status\n  opsd capacity status --limit 50 --output json\n\nExit codes:\n  0   shown\n  64  no [capacity] section in the config\n  69  the cluster or fleet could not be read\n  70  the history could not be read"
    )]
    Status {
        /// How many recent decisions to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

/// Run a `opsd capacity …` command. The store and the SDK config are opened when needed, in that order.
pub async fn run<S, A>(cmd: CapacityCommand, settings: Option<&CapacitySettings>, store: S, sdk: A) -> Exit
where
    S: Future<Output = Result<Store, Exit>>,
    A: Future<Output = Result<aws_config::SdkConfig, Exit>>,
{
    let CapacityCommand::Status { limit, output } = cmd;
    let Some(c) = settings else {
        eprintln!("opsd: the config has no [capacity] section; add one with cluster and spot_fleet_request_id or auto_scaling_group");
        return Exit::Usage;
    };
    let history = match store.await {
        Ok(s) => DecisionHistory::new(s),
        Err(exit) => return exit,
    };
    let decisions = match history.recent(limit).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    let sdk = match sdk.await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let seen = match observe::observe(&Clients::new(&sdk), &c.cluster, &c.target(), c.register_timeout.0).await {
        Ok(s) => s,
        Err(e) => {
            // The history is still worth seeing (it says what happened before the fault).
            match output {
                OutputFormat::Json => outln!(
                    "{}",
                    serde_json::json!({
                        "cluster": c.cluster,
                        "target": c.target().to_string(),
                        "error": e.to_string(),
                        "decisions": decisions,
                    })
                ),
                OutputFormat::Text => {
                    outln!("cluster {} on {}: cannot observe it: {e}", c.cluster, c.target());
                    print_decisions(decisions);
                }
            }
            eprintln!("opsd: {e}");
            return Exit::Unavailable;
        }
    };
    // The running daemon's latest evaluation (it knows the demand's trend), and what the policy
    // decides now, with the cooldowns of the decisions recorded and the daemon's below-target clock.
    let latest = history.latest().await.ok().flatten();
    let wall = Utc::now();
    let ago = |at: DateTime<Utc>| (wall - at).num_milliseconds() as f64 / 1000.0;
    // Older than the controller ever goes without one, or of another cluster or fleet (the config
    // changed since): shown, not used.
    let stale = stale_after(c).as_secs_f64();
    let scope = c.scope();
    let fresh = latest.as_ref().filter(|l| ago(l.decision.at) <= stale && l.scope == scope);
    let mut mem = history.memory().await;
    if let Some(l) = fresh {
        mem.below_target_since = l.below_target_since.map(|t| -ago(t));
    }
    let now = decide(&seen, &mem, c, 0.0);
    let (kind, to, victims) = action_parts(&now.action, seen.fleet.target);
    let desired = fresh.map(|l| l.decision.to_capacity).unwrap_or(to);
    let (cpu, res_mem) = policy::reservations(&seen.observation.instances);
    match output {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::json!({
                "cluster": c.cluster,
                "target": c.target().to_string(),
                "reservation": { "cpu": cpu, "memory": res_mem, "max": now.reservation },
                "instances": seen.observation.instances.len(),
                "unplaced_tasks": seen.observation.unplaced.len(),
                "never_registered": seen.never_registered.iter().map(|(id, age)| serde_json::json!({"instance": id, "launched_seconds_ago": age})).collect::<Vec<_>>(),
                "short_services": seen.short_services.iter().map(|(n, m)| serde_json::json!({"service": n, "missing": m})).collect::<Vec<_>>(),
                "capacity": { "target": seen.fleet.target, "fulfilled": seen.fleet.fulfilled, "desired": desired, "state": seen.fleet_state },
                "daemon": latest.as_ref().map(|l| serde_json::json!({
                    "at": l.decision.at,
                    "age_seconds": ago(l.decision.at),
                    "current": fresh.is_some(),
                    "scope": l.scope,
                    "action": l.decision.action,
                    "to_capacity": l.decision.to_capacity,
                    "victims": l.decision.victims.0,
                    "reason": l.decision.reason,
                    "dry_run": l.decision.dry_run,
                    "below_target_since": l.below_target_since,
                })),
                "decision_now": { "action": kind, "to_capacity": to, "victims": victims, "reason": now.reason },
                "decisions": decisions,
            })
        ),
        OutputFormat::Text => {
            outln!("cluster {} on {} ({})", c.cluster, c.target(), seen.fleet_state);
            outln!("reservation: CPU {cpu:.1}%, memory {res_mem:.1}% (target {}%)", c.target_reservation.0);
            outln!(
                "unplaced tasks: {}{}",
                seen.observation.unplaced.len(),
                seen.short_services.iter().map(|(n, m)| format!(", service {n} short {m}")).collect::<String>()
            );
            outln!("capacity: target {}, fulfilled {}, desired {desired}", seen.fleet.target, seen.fleet.fulfilled);
            for (id, age) in &seen.never_registered {
                outln!(
                    "not registered: {id}, launched {} ago, past register_timeout: not counted as launching; check its ECS agent or terminate it",
                    humantime::format_duration(std::time::Duration::from_secs(*age))
                );
            }
            match &latest {
                Some(l) => {
                    let d = &l.decision;
                    let note = if l.scope != scope {
                        format!(
                            ", not current: it evaluated {} (restart the daemon after a [capacity] change)",
                            l.scope
                        )
                    } else if fresh.is_none() {
                        ", not current: the daemon is stopped or cannot observe the cluster (see its log)".to_string()
                    } else {
                        String::new()
                    };
                    outln!(
                        "daemon ({:.0}s ago{note}): {}: {}",
                        ago(d.at),
                        action_text(d.action, d.to_capacity),
                        d.reason
                    )
                }
                None => outln!("daemon: no evaluation recorded yet (is `opsd daemon` running with this [capacity]?)"),
            }
            outln!("now: {}: {}", action_text(kind, to), now.reason);
            print_decisions(decisions);
        }
    }
    Exit::Ok
}

/// `hold`, `scale out to 4`, `scale in to 2`.
fn action_text(kind: DecisionKind, to: f64) -> String {
    let words = kind.as_str().replace('_', " ");
    match kind {
        DecisionKind::Hold => words,
        DecisionKind::ScaleOut | DecisionKind::ScaleIn => format!("{words} to {to}"),
    }
}

fn print_decisions(decisions: Vec<DecisionRecord>) {
    outln!("\nlast decisions:");
    for d in decisions {
        outln!(
            "{} {:<9} {:>5} → {:<5} {:<11} {}{}",
            d.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            d.action,
            d.from_capacity,
            d.to_capacity,
            d.outcome,
            d.reason,
            d.error.map(|e| format!(" [error: {e}]")).unwrap_or_default()
        );
    }
}
