//! Several `opsd daemon` replicas acting as one through a DynamoDB table (DynamoDB Local, AWS's own
//! emulator, in the sandbox): every firing runs exactly once across them.
//!
//! Each test has its own table and its own replicas (real daemons with their own state directories).

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::capacity as cap;
use support::cluster::Cluster;
use support::daemon::wait_for;
use support::lifecycle as lc;
use support::*;

/// A job file on `@every <secs>s` targeting `tag`.
fn every(tag: &str, secs: u64, commands: &[&str]) -> String {
    format!("schedule = \"@every {secs}s\"\n{}", job("T", tag, commands, "", ""))
}

/// Test 1: three replicas, a job every 2 s for 30 firings: each firing has exactly one run, across
/// the three replicas' records and the table, and no 2-second slot between the first and the last
/// is missing.
#[test]
fn three_replicas_run_each_firing_exactly_once() {
    let c = Cluster::new("");
    let tag = unique("cluster-once");
    fleet(1, &[("T", &tag)], &[]);
    c.ctx.write_job("tick", &every(&tag, 2, &["echo tick"]));
    let replicas: Vec<_> = ["r1", "r2", "r3"].iter().map(|r| (*r, c.replica(r, &[]))).collect();
    wait_for("30 firings in the table", 120, &replicas[0].1, || c.firings("tick").len() >= 30);
    for (_, d) in replicas {
        d.stop_ok();
    }

    let table = c.firings("tick");
    // Every replica's own records: one run per firing, and the table names that replica.
    let mut ran: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in ["r1", "r2", "r3"] {
        for run in c.local_runs(r, "tick") {
            let at = run["scheduled_for"].as_str().unwrap().to_string();
            assert_eq!(run["outcome"], "succeeded", "{r}: {run}");
            ran.entry(at).or_default().push(r.to_string());
        }
    }
    let doubled: Vec<_> = ran.iter().filter(|(_, rs)| rs.len() > 1).collect();
    assert!(doubled.is_empty(), "firings run by more than one replica: {doubled:?}");
    assert_eq!(ran.len(), table.len(), "runs {ran:?}\ntable {table:?}");
    for (at, owner, state) in &table {
        let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&chrono::Utc);
        let key = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let local =
            ran.keys().find(|k| chrono::DateTime::parse_from_rfc3339(k).unwrap().with_timezone(&chrono::Utc) == at);
        let local = local.unwrap_or_else(|| panic!("the table's firing {key} ({owner}) is in no replica's records"));
        assert_eq!(&ran[local], &vec![owner.clone()], "{key}");
        assert_eq!(state, "succeeded", "{key}");
    }
    // No gap: consecutive firings 2 s apart, from the first to the last.
    let times: Vec<_> =
        table.iter().map(|(at, _, _)| chrono::DateTime::parse_from_rfc3339(at).unwrap().timestamp_millis()).collect();
    let gaps: BTreeSet<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, BTreeSet::from([2000]), "{times:?}");
    // The work was shared (each replica claims the firings it reaches first).
    let owners: BTreeSet<&str> = table.iter().map(|(_, o, _)| o.as_str()).collect();
    assert!(owners.len() >= 2, "one replica ran everything: {owners:?}");
    // `opsd history` on any replica lists the whole cluster's firings, each with the replica that
    // ran it and the run's id in that replica's own store (where `--run` shows its hosts).
    let listed = c.ctx.json(&["history", "tick", "--limit", "1000"]);
    let listed = listed["firings"].as_array().unwrap();
    assert_eq!(listed.len(), table.len(), "{listed:?}");
    for f in listed {
        let replica = f["replica"].as_str().unwrap();
        let local = c.local_runs(replica, "tick");
        let run =
            local.iter().find(|r| r["id"] == f["run_id"]).unwrap_or_else(|| panic!("{f} not in {replica}'s store"));
        assert_eq!(run["scheduled_for"], f["scheduled_for"], "{f} vs {run}");
        assert_eq!(f["state"], "succeeded", "{f}");
    }
    let text = String::from_utf8(c.ctx.run(&["history", "tick"]).stdout).unwrap();
    assert!(text.contains("REPLICA") && text.contains("on the replica that ran it"), "{text}");
}

/// A daemon whose [cluster] table does not exist refuses to start, naming the table and the command
/// that creates it; `opsd cluster status` lists the live members.
#[test]
fn a_missing_table_is_named_and_members_are_listed() {
    let c = Cluster::new("");
    let missing = support::Ctx::with_config_extra("[cluster]\ntable = \"opsd-no-such-table\"\n");
    let out = missing.opsd().arg("daemon").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("opsd-no-such-table") && err.contains("opsd cluster init"), "{err}");

    let a = c.replica("alpha", &[]);
    let b = c.replica("beta", &[]);
    wait_for("both members", 20, &a, || {
        let s = c.ctx.json(&["cluster", "status"]);
        let names: BTreeSet<String> =
            s["members"].as_array().unwrap().iter().map(|m| m["replica"].as_str().unwrap().to_string()).collect();
        names == BTreeSet::from(["alpha".to_string(), "beta".to_string()])
    });
    b.stop_ok();
    // A replica that stops leaves the member list.
    wait_for("beta gone", 20, &a, || {
        let s = c.ctx.json(&["cluster", "status"]);
        s["members"].as_array().unwrap().len() == 1
    });
    a.stop_ok();
}

/// Test 2: `kill -9` of the replica running a firing: the others record that firing as
/// interrupted (once), and the next firings run on them with no gap and none doubled.
#[test]
fn a_killed_replicas_firing_is_recorded_interrupted_and_the_others_go_on() {
    let c = Cluster::new("");
    let tag = unique("cluster-kill");
    fleet(1, &[("T", &tag)], &[]);
    c.ctx.write_job("slow", &every(&tag, 3, &["sleep 2", "echo done"]));
    let mut replicas: BTreeMap<&str, support::daemon::Daemon> =
        ["r1", "r2", "r3"].into_iter().map(|r| (r, c.replica(r, &[]))).collect();
    // A firing being run: who runs it, and which it is.
    let mut victim = None;
    wait_for("a firing being run", 60, &replicas["r1"], || {
        victim = c.firings("slow").into_iter().find(|(_, owner, state)| state == "running" && !owner.is_empty());
        victim.is_some()
    });
    let (at, owner, _) = victim.unwrap();
    let killed = replicas.remove(owner.as_str()).unwrap();
    killed.signal("-KILL");
    let survivor = replicas.values().next().unwrap();
    wait_for("the killed replica's firing recorded interrupted", 30, survivor, || {
        c.firings("slow").iter().any(|(a, _, state)| *a == at && state == "interrupted")
    });
    // Three more firings after the kill, each run by a survivor.
    let later = |c: &Cluster| -> Vec<(String, String, String)> {
        c.firings("slow").into_iter().filter(|(a, _, s)| *a > at && s == "succeeded").collect()
    };
    wait_for("three firings after the kill", 40, survivor, || later(&c).len() >= 3);
    for (_, d) in replicas {
        d.stop_ok();
    }
    drop(killed);
    let table = c.firings("slow");
    for (a, o, s) in table.iter().filter(|(a, _, _)| *a > at) {
        assert_ne!(o, &owner, "{a} was claimed by the killed replica after its death ({s})");
    }
    // Exactly one interrupted record, for that firing; the surviving replicas' own records hold
    // every other firing once, and the killed one's its runs before (and the cut one, left running).
    let interrupted: Vec<_> = table.iter().filter(|(_, _, s)| s == "interrupted").collect();
    assert_eq!(interrupted.len(), 1, "{table:?}");
    let mut ran: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in ["r1", "r2", "r3"] {
        for run in c.local_runs(r, "slow") {
            ran.entry(run["scheduled_for"].as_str().unwrap().to_string()).or_default().push(r);
        }
    }
    assert!(ran.values().all(|rs| rs.len() == 1), "a firing ran twice: {ran:?}");
    // The cut firing is in the killed replica's records only if it got as far as starting its run.
    let others: Vec<_> = table.iter().filter(|(a, _, _)| *a != at).collect();
    assert_eq!(ran.keys().filter(|a| **a != at).count(), others.len(), "runs {ran:?}\ntable {table:?}");
    assert!(ran.get(&at).is_none_or(|rs| rs == &vec![owner.as_str()]), "{ran:?}");
    // No gap: the firings are 3 s apart throughout.
    let times: Vec<i64> =
        table.iter().map(|(a, _, _)| chrono::DateTime::parse_from_rfc3339(a).unwrap().timestamp_millis()).collect();
    let gaps: BTreeSet<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, BTreeSet::from([3000]), "{times:?}");
}

/// Test 3: `overlap = "skip"` across replicas: a job slower than its period never runs twice at
/// once, whichever replicas claim its firings; the firings that come while another replica runs it
/// are skipped, say so, and name that replica.
#[test]
fn overlap_skip_spans_the_replicas() {
    let c = Cluster::new("");
    let tag = unique("cluster-overlap");
    fleet(1, &[("T", &tag)], &[]);
    c.ctx.write_job("long", &format!("overlap = \"skip\"\n{}", every(&tag, 1, &["sleep 3"])));
    let replicas: Vec<_> = ["r1", "r2", "r3"].into_iter().map(|r| c.replica(r, &[])).collect();
    wait_for("three runs", 60, &replicas[0], || {
        c.firings("long").iter().filter(|(_, _, s)| s == "succeeded").count() >= 3
    });
    for d in replicas {
        d.stop_ok();
    }
    // Every replica's runs, with their times: no two overlap.
    let mut runs: Vec<(i64, i64, &str)> = Vec::new();
    let mut skipped: Vec<(String, &str)> = Vec::new();
    for r in ["r1", "r2", "r3"] {
        for run in c.local_runs(r, "long") {
            let t =
                |k: &str| chrono::DateTime::parse_from_rfc3339(run[k].as_str().unwrap()).unwrap().timestamp_millis();
            match run["outcome"].as_str().unwrap() {
                "succeeded" => runs.push((t("started_at"), t("ended_at"), r)),
                "skipped" => skipped.push((run["reason"].as_str().unwrap().to_string(), r)),
                other => panic!("{r}: {other}: {run}"),
            }
        }
    }
    runs.sort();
    for w in runs.windows(2) {
        assert!(w[0].1 <= w[1].0, "two runs at once: {:?} and {:?} (all: {runs:?})", w[0], w[1]);
    }
    assert!(runs.len() >= 3, "{runs:?}");
    // Skips say why, naming the replica that runs the job; some were on another replica than the run.
    assert!(!skipped.is_empty(), "no firing skipped: {runs:?}");
    for (reason, _) in &skipped {
        assert!(reason.contains("still running on replica r") || reason.contains(" on replica r"), "{reason}");
        assert!(reason.ends_with("(overlap = skip)"), "{reason}");
    }
    assert!(
        skipped.iter().any(|(reason, r)| !reason.contains(&format!("on replica {r} "))),
        "no firing was skipped for a run on another replica: {skipped:?}"
    );
}

/// Test 7: a table that throttles (the sandbox's proxy refuses 30 % of the writes with
/// ProvisionedThroughputExceededException or ThrottlingException): no firing lost or doubled.
#[test]
fn a_throttling_table_loses_and_doubles_nothing() {
    let c = Cluster::named("opsd-throttle30", "");
    let tag = unique("cluster-throttle");
    fleet(1, &[("T", &tag)], &[]);
    // `allow`: what is under test is the claims; with `skip`, a firing that comes while the last
    // one's marker is still being released (throttled) would be skipped, by the policy.
    c.ctx.write_job("tock", &format!("overlap = \"allow\"\n{}", every(&tag, 2, &["true"])));
    let metrics = [("OPSD_METRICS_LISTEN", "127.0.0.1:0")];
    let replicas: Vec<_> = ["r1", "r2", "r3"].into_iter().map(|r| c.replica(r, &metrics)).collect();
    wait_for("15 firings ended", 90, &replicas[0], || {
        c.firings("tock").iter().filter(|(_, _, s)| s == "succeeded").count() >= 15
    });
    // The throttling is visible: requests refused for load, by operation, and the claims' latency.
    let text: String = replicas.iter().map(|d| d.metrics()).collect();
    let sum = |series: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    assert!(sum("opsd_cluster_requests_total{operation=\"PutItem\",result=\"throttled\"}") > 0.0, "{text}");
    assert!(sum("opsd_cluster_requests_total{operation=\"PutItem\",result=\"ok\"}") > 0.0, "{text}");
    assert!(sum("opsd_cluster_claim_seconds_count") >= 15.0, "{text}");
    // Firings that come due while the replicas are being stopped may be skipped (shutdown); every
    // one before must have run.
    let stopping_from = chrono::Utc::now();
    for d in replicas {
        d.stop_ok();
    }
    let table = c.firings("tock");
    let mut ran: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in ["r1", "r2", "r3"] {
        for run in c.local_runs(r, "tock") {
            assert_ne!(run["outcome"], "error", "{r}: {run}");
            ran.entry(run["scheduled_for"].as_str().unwrap().to_string()).or_default().push(r);
        }
    }
    assert!(ran.values().all(|rs| rs.len() == 1), "a firing ran twice: {ran:?}");
    assert_eq!(ran.len(), table.len(), "runs {ran:?}\ntable {table:?}");
    // None lost: 2 s apart from the first to the last, every one ended.
    let times: Vec<i64> =
        table.iter().map(|(a, _, _)| chrono::DateTime::parse_from_rfc3339(a).unwrap().timestamp_millis()).collect();
    let gaps: BTreeSet<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, BTreeSet::from([2000]), "{times:?}");
    let due = |a: &str| chrono::DateTime::parse_from_rfc3339(a).unwrap() < stopping_from;
    assert!(table.iter().all(|(a, _, s)| s == "succeeded" || (!due(a) && s == "skipped")), "{table:?}");
}

/// Test 6: replicas whose wall clocks differ by ±3 s (libfaketime on two of them): still exactly
/// once, with no gap. The skew is real: their heartbeats carry their clocks.
#[test]
fn replicas_with_skewed_clocks_still_run_each_firing_once() {
    let c = Cluster::new("");
    let tag = unique("cluster-skew");
    fleet(1, &[("T", &tag)], &[]);
    c.ctx.write_job("skew", &every(&tag, 2, &["true"]));
    let lib = env("OPSD_SANDBOX_LIBFAKETIME");
    assert!(!lib.is_empty(), "libfaketime is missing: scripts/sandbox up installs Debian's faketime");
    let skewed = |offset: &'static str| {
        [("LD_PRELOAD", lib.as_str()), ("FAKETIME", offset), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")]
    };
    let replicas = [c.replica("now", &[]), c.replica("ahead", &skewed("+3s")), c.replica("behind", &skewed("-3s"))];
    // The heartbeats show the clocks' skew.
    let mut clocks = BTreeMap::new();
    wait_for("three members with their clocks", 30, &replicas[0], || {
        let s = c.ctx.json(&["cluster", "status"]);
        clocks = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["replica"].as_str().unwrap().to_string(), m["beat_at"].as_str().unwrap().to_string()))
            .collect::<BTreeMap<_, _>>();
        clocks.len() == 3
    });
    let at = |r: &str| chrono::DateTime::parse_from_rfc3339(&clocks[r]).unwrap().timestamp_millis();
    // Heartbeats are written up to a second apart: the skew shows within that.
    let (ahead_by, behind_by) = (at("ahead") - at("now"), at("behind") - at("now"));
    assert!((1500..=4500).contains(&ahead_by) && (-4500..=-1500).contains(&behind_by), "{clocks:?}");
    wait_for("15 firings", 90, &replicas[0], || c.firings("skew").iter().filter(|f| f.2 == "succeeded").count() >= 15);
    for d in replicas {
        d.stop_ok();
    }
    let table = c.firings("skew");
    let mut ran: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in ["now", "ahead", "behind"] {
        for run in c.local_runs(r, "skew") {
            ran.entry(run["scheduled_for"].as_str().unwrap().to_string()).or_default().push(r);
        }
    }
    assert!(ran.values().all(|rs| rs.len() == 1), "a firing ran twice: {ran:?}");
    assert_eq!(ran.len(), table.len(), "runs {ran:?}\ntable {table:?}");
    let times: Vec<i64> =
        table.iter().map(|(a, _, _)| chrono::DateTime::parse_from_rfc3339(a).unwrap().timestamp_millis()).collect();
    let gaps: BTreeSet<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, BTreeSet::from([2000]), "{times:?}");
    // The clock 3 s ahead reaches every firing first.
    let owners: BTreeSet<&str> = table.iter().map(|(_, o, _)| o.as_str()).collect();
    assert!(owners.contains("ahead"), "{owners:?} (clocks {clocks:?})");
}

/// The capacity decisions `replica` recorded that changed the fleet (acted), as (action, to).
fn acted(c: &Cluster, replica: &str) -> Vec<(String, f64)> {
    c.decisions(replica)
        .iter()
        .filter(|d| d["outcome"] == "acted")
        .map(|d| (d["action"].as_str().unwrap().to_string(), d["to_capacity"].as_f64().unwrap()))
        .collect()
}

/// Test 4, first half: the capacity leader is killed (`kill -9`): another replica takes the lease
/// over within about a lease (it must first see the lease stand still for a whole one) and acts.
#[test]
fn a_killed_capacity_leader_is_replaced_and_the_new_one_acts() {
    let a = cap::aws();
    let fleet = cap::cluster(&a, 2);
    // One task per c5.large: demand beyond the fleet is unplaced and scales it out.
    let td = a.task_def(1024, 2048);
    a.service(&fleet, "api", &td, 2);
    let c = Cluster::with("opsd-lease", "leader_lease = \"4s\"", &cap::section(&fleet, ""));
    let mut replicas: BTreeMap<&str, support::daemon::Daemon> = BTreeMap::new();
    replicas.insert("r1", c.replica("r1", &[]));
    wait_for("r1 leads", 30, &replicas["r1"], || c.leader().0 == "r1");
    replicas.insert("r2", c.replica("r2", &[]));
    a.set_desired(&fleet, "api", 4);
    wait_for("the leader scales out to 4", 60, &replicas["r1"], || a.fleet(&fleet).0 == 4);
    assert!(acted(&c, "r1").contains(&("scale_out".into(), 4.0)), "{:?}", c.decisions("r1"));

    let (leader, epoch) = c.leader();
    let killed = replicas.remove(leader.as_str()).unwrap();
    killed.signal("-KILL");
    let killed_at = std::time::Instant::now();
    let survivor = replicas.values().next().unwrap();
    a.set_desired(&fleet, "api", 6);
    wait_for("another replica takes the lease over", 30, survivor, || c.leader() == ("r2".into(), epoch + 1));
    let took = killed_at.elapsed();
    wait_for("the new leader scales out to 6", 60, survivor, || a.fleet(&fleet).0 == 6);
    let log = replicas.remove("r2").unwrap().stop_ok();
    drop(killed);
    assert!(log.contains("this replica leads the capacity controller (epoch 2)"), "{log}");
    assert!(acted(&c, "r2").contains(&("scale_out".into(), 6.0)), "{:?}", c.decisions("r2"));
    assert!(!acted(&c, "r1").iter().any(|(_, to)| *to == 6.0), "{:?}", c.decisions("r1"));
    // Within the lease plus how often a follower looks (a sixth) and the last renewal's age
    // (at most a third): well under three leases.
    assert!(took < Duration::from_secs(12), "the lease passed after {took:?}");
    eprintln!("the lease passed {took:?} after the kill");
    // Released at r2's clean stop: the next start need not wait a lease.
    assert_eq!(c.leader(), (String::new(), epoch + 1));
}

/// Test 4, second half: the leader is paused (SIGSTOP) in the middle of a long drain, past its
/// lease; another replica takes over, puts the paused one's victims back to work and scales out.
/// Woken (SIGCONT), the old leader takes no further step: its scale-in is recorded `fenced`, and the
/// fleet's target is the new leader's alone.
#[test]
fn a_paused_leader_is_fenced_and_only_the_new_leader_changes_the_target() {
    let a = cap::aws();
    // Stopped tasks take 10 minutes to stop: the drain outlasts the pause.
    let fleet = cap::cluster_with(&a, 4, Some(600));
    let td = a.task_def(1024, 1024);
    a.service(&fleet, "api", &td, 8);
    a.set_desired(&fleet, "api", 2);
    let before = a.members(&fleet);
    let extra = cap::section(&fleet, "drain_timeout = \"10m\"");
    let c = Cluster::with("opsd-fence", "leader_lease = \"4s\"", &extra);
    let r1 = c.replica("r1", &[]);
    wait_for("r1 leads and drains two instances", 60, &r1, || c.leader().0 == "r1" && a.draining(&fleet).len() == 2);
    let mut drained = a.draining(&fleet);
    drained.sort();
    let r2 = c.replica("r2", &[]);
    wait_for("r2 has joined", 30, &r2, || r2.log().contains("opsd daemon started"));
    r1.signal("-STOP");
    // Demand rises while r1 is paused: the next leader must scale out.
    a.set_desired(&fleet, "api", 10);
    wait_for("r2 takes the lease over", 30, &r2, || c.leader() == ("r2".into(), 2));
    wait_for("r2 scales out", 60, &r2, || a.fleet(&fleet).0 > 4);
    wait_for("r1's victims back to ACTIVE", 30, &r2, || a.draining(&fleet).is_empty());
    r1.signal("-CONT");
    wait_for("r1's scale-in recorded fenced", 30, &r1, || {
        c.decisions("r1").iter().any(|d| d["action"] == "scale_in" && d["outcome"] == "fenced")
    });
    // A few ticks more: r1 (now following) changes nothing.
    std::thread::sleep(Duration::from_secs(4));
    let target = a.fleet(&fleet).0;
    let log2 = r2.stop_ok();
    let log1 = r1.stop_ok();
    assert!(log1.contains("no longer leads"), "{log1}");
    assert!(log2.contains("left a scale-in of"), "{log2}");
    assert!(acted(&c, "r1").is_empty(), "the paused leader acted: {:?}", c.decisions("r1"));
    let fenced: Vec<_> = c.decisions("r1").into_iter().filter(|d| d["outcome"] == "fenced").collect();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    let mut victims: Vec<String> = fenced[0]["victims"].as_str().unwrap().split(',').map(String::from).collect();
    victims.sort();
    assert_eq!(victims, drained);
    assert!(fenced[0]["error"].as_str().unwrap().contains("lease"), "{}", fenced[0]);
    // The target is the last one r2 set, and nothing r1 chose was terminated.
    let by_r2 = acted(&c, "r2");
    assert!(!by_r2.is_empty(), "{:?}", c.decisions("r2"));
    assert_eq!(by_r2[0], ("scale_out".to_string(), target as f64), "{by_r2:?}");
    for id in &before {
        assert_eq!(a.state(id), "running", "{id} was terminated");
    }
}

/// Fencing by the conditional write alone: while the leader drains, its lease passes to another
/// holder behind its back (as if its clock had run slow and it had not seen its deadline pass). Its
/// next write under the lease is refused by DynamoDB and it takes no further step (its scale-in is
/// recorded `fenced`). When the new holder stays silent for a whole lease, it takes the lease back
/// (epoch 3) and, finding the earlier epoch's victims in the lease's journal, puts them back to work.
#[test]
fn a_leader_whose_lease_moved_is_fenced_by_the_refused_write() {
    let a = cap::aws();
    let fleet = cap::cluster_with(&a, 4, Some(600));
    let td = a.task_def(1024, 1024);
    a.service(&fleet, "api", &td, 8);
    a.set_desired(&fleet, "api", 2);
    let extra = cap::section(&fleet, "drain_timeout = \"10m\"");
    let c = Cluster::with("opsd-intruder", "leader_lease = \"4s\"", &extra);
    let r1 = c.replica("r1", &[]);
    wait_for("r1 leads and drains two instances", 60, &r1, || c.leader().0 == "r1" && a.draining(&fleet).len() == 2);
    let (name, _, epoch) = c.leases().remove(0);
    c.rt.block_on(
        c.ddb
            .update_item()
            .table_name(&c.table)
            .key("pk", AttributeValue::S("lease".into()))
            .key("sk", AttributeValue::S(name))
            .update_expression("SET holder = :h, incarnation = :h, epoch = epoch + :one, version = :v")
            .expression_attribute_values(":h", AttributeValue::S("intruder".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":v", AttributeValue::S("intruder-version".into()))
            .send(),
    )
    .unwrap();
    wait_for("r1's scale-in recorded fenced", 30, &r1, || {
        c.decisions("r1").iter().any(|d| d["action"] == "scale_in" && d["outcome"] == "fenced")
    });
    assert!(r1.log().contains(&format!("passed from this replica (epoch {epoch}) to intruder")), "{}", r1.log());
    // Demand rises: once it leads again, r1 scales out rather than in.
    a.set_desired(&fleet, "api", 10);
    wait_for("r1 takes the silent lease back", 30, &r1, || c.leader() == ("r1".into(), epoch + 2));
    wait_for("the victims of epoch 1 back to ACTIVE", 30, &r1, || a.draining(&fleet).is_empty());
    wait_for("r1 scales out", 60, &r1, || a.fleet(&fleet).0 > 4);
    let log = r1.stop_ok();
    assert!(log.contains(&format!("the leader of epoch {epoch} left a scale-in")), "{log}");
    // Its fenced scale-in terminated nothing; leading again, it scaled out.
    let acted = acted(&c, "r1");
    assert!(acted.iter().all(|(a, _)| a == "scale_out") && !acted.is_empty(), "{:?}", c.decisions("r1"));
    assert_eq!(a.fleet(&fleet).0 as f64, acted[0].1, "{acted:?}");
}

/// Test 5: lifecycle work spreads over the replicas through the queue: 50 launches with two
/// replicas, one killed (`kill -9`) midway. The messages it held return to the other, which resumes
/// each action with the interface already made: every instance InService with exactly one
/// interface at device index 1, and the queue empty.
#[test]
fn lifecycle_work_survives_a_killed_replica() {
    let a = lc::aws();
    // Interfaces pending 2 s: actions are in flight when the replica is killed.
    let g = lc::group(&a, lc::Setup { pending: Some("2"), ..lc::Setup::default() });
    let c = Cluster::with("opsd-lifecycle", "", &lc::section(&g, "visibility_timeout = \"5s\"\n", ""));
    let r1 = c.replica("r1", &[]);
    let r2 = c.replica("r2", &[]);
    a.scale(&g, 50);
    // Killed while it waits on interfaces it created (each pending 2 s).
    wait_for("r1 creating interfaces", 120, &r1, || r1.log().matches("created interface").count() >= 5);
    r1.signal("-KILL");
    let started = r1.log();
    let _ = r1.wait(Duration::from_secs(10));
    wait_for("50 instances in service", 240, &r2, || {
        let s = a.states(&g);
        s.len() == 50 && s.values().all(|v| v == "InService")
    });
    lc::assert_each_has_its_eni(&a, &g, 50);
    wait_for("an empty queue", 30, &r2, || a.depth(&g.queue) == (0, 0));
    // Both replicas did part of the work.
    let (one, two) = (c.actions("r1"), c.actions("r2"));
    let completed = |acts: &[serde_json::Value]| acts.iter().filter(|x| x["outcome"] == "completed").count();
    assert!(completed(&two) > 0, "r2 {two:?}");
    // The killed replica was cut short in the middle of actions (started, never recorded), which
    // the other finished.
    let cut: Vec<&str> = started
        .lines()
        .filter_map(|l| l.rsplit("launch ").next()?.trim_end().strip_suffix(": started"))
        .filter(|id| !one.iter().any(|x| x["instance_id"] == *id))
        .collect();
    assert!(!cut.is_empty(), "r1 was killed between actions: {one:?}");
    for id in cut {
        let finished = two.iter().any(|y| y["instance_id"] == id && y["outcome"] == "completed");
        assert!(finished, "{id}, cut short on r1, was not completed by r2");
    }
    a.scale(&g, 0);
    wait_for("the instances to terminate", 180, &r2, || a.states(&g).is_empty());
    r2.stop_ok();
}

/// `catch_up` counts from the cluster's last firing: a replica restarted while another kept firing
/// missed nothing and catches nothing up; when the whole cluster was down past a firing, the
/// replicas started together run one catch-up firing between them.
#[test]
fn catch_up_counts_from_the_clusters_last_firing() {
    let c = Cluster::new("");
    let tag = unique("cluster-catchup");
    fleet(1, &[("T", &tag)], &[]);
    c.ctx.write_job("cu", &format!("catch_up = true\n{}", every(&tag, 3, &["true"])));
    let trigger_of = |c: &Cluster| -> Vec<(String, String)> {
        let text = |i: &std::collections::HashMap<String, AttributeValue>, k: &str| {
            i.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
        };
        c.items("job#cu")
            .iter()
            .filter(|i| text(i, "sk").starts_with("firing#"))
            .map(|i| (text(i, "scheduled_for"), text(i, "trigger")))
            .collect()
    };
    let r1 = c.replica("r1", &[]);
    let r2 = c.replica("r2", &[]);
    wait_for("three firings", 40, &r1, || c.firings("cu").len() >= 3);
    // r1 stops while r2 goes on firing; restarted, r1 has missed nothing.
    r1.stop_ok();
    let before = c.firings("cu").len();
    wait_for("two firings by r2 alone", 30, &r2, || c.firings("cu").len() >= before + 2);
    let r1 = c.replica("r1", &[]);
    wait_for("r1 back and a firing after it", 30, &r1, || {
        r1.log().contains("opsd daemon started") && c.firings("cu").len() >= before + 4
    });
    assert!(!r1.log().contains("catch_up: a firing was missed"), "{}", r1.log());
    assert!(trigger_of(&c).iter().all(|(_, t)| t == "schedule"), "{:?}", trigger_of(&c));
    // The whole cluster down past a firing: one catch-up between the two.
    r1.stop_ok();
    r2.stop_ok();
    std::thread::sleep(Duration::from_secs(4));
    let (r1, r2) = (c.replica("r1", &[]), c.replica("r2", &[]));
    wait_for("the catch-up firing", 30, &r1, || trigger_of(&c).iter().any(|(_, t)| t == "catch-up"));
    std::thread::sleep(Duration::from_secs(2));
    r1.stop_ok();
    r2.stop_ok();
    let catch: Vec<_> = trigger_of(&c).into_iter().filter(|(_, t)| t == "catch-up").collect();
    assert_eq!(catch.len(), 1, "{:?}", trigger_of(&c));
    let runs: usize =
        ["r1", "r2"].iter().map(|r| c.local_runs(r, "cu").iter().filter(|x| x["trigger"] == "catch-up").count()).sum();
    assert_eq!(runs, 1);
}

/// Self-fencing: a replica paused (SIGSTOP) while it runs a firing, past `member_timeout`. The other
/// records that firing `interrupted` and goes on firing. Woken (SIGCONT), the paused replica does not
/// overwrite the `interrupted` record with its run's end, and claims nothing until its heartbeat
/// lands again: every later firing still runs exactly once, with no gap.
#[test]
fn a_paused_replica_fences_itself() {
    let c = Cluster::new("");
    let tag = unique("cluster-pause");
    fleet(1, &[("T", &tag)], &[]);
    // overlap = "allow": the firings while the paused replica's run is held are not skipped for it.
    c.ctx.write_job("p", &format!("overlap = \"allow\"\n{}", every(&tag, 2, &["sleep 1"])));
    let mut replicas: BTreeMap<&str, support::daemon::Daemon> =
        ["r1", "r2"].into_iter().map(|r| (r, c.replica(r, &[]))).collect();
    let mut victim = None;
    wait_for("a firing being run", 60, &replicas["r1"], || {
        victim = c.firings("p").into_iter().find(|(_, owner, state)| state == "running" && !owner.is_empty());
        victim.is_some()
    });
    let (at, owner, _) = victim.unwrap();
    let other = if owner == "r1" { "r2" } else { "r1" };
    replicas[owner.as_str()].signal("-STOP");
    wait_for("the paused replica's firing recorded interrupted", 30, &replicas[other], || {
        c.firings("p").iter().any(|(a, _, state)| *a == at && state == "interrupted")
    });
    replicas[owner.as_str()].signal("-CONT");
    let woke = c.firings("p").len();
    wait_for("five firings after the wake", 30, &replicas[other], || c.firings("p").len() >= woke + 5);
    for (_, d) in std::mem::take(&mut replicas) {
        d.stop_ok();
    }
    let table = c.firings("p");
    let cut: Vec<_> = table.iter().filter(|(a, _, _)| *a == at).collect();
    assert_eq!(cut.len(), 1);
    assert_eq!((cut[0].1.as_str(), cut[0].2.as_str()), (owner.as_str(), "interrupted"), "{table:?}");
    // Every other firing ran once (no claim left in error by the woken replica), with no gap.
    for (a, o, s) in table.iter().filter(|(a, _, _)| *a != at) {
        assert_eq!(s, "succeeded", "{a} ({o}): {table:?}");
    }
    let mut ran: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in ["r1", "r2"] {
        for run in c.local_runs(r, "p").iter().filter(|x| x["outcome"] != "error") {
            ran.entry(run["scheduled_for"].as_str().unwrap().to_string()).or_default().push(r);
        }
    }
    assert!(ran.values().all(|rs| rs.len() == 1), "a firing ran twice: {ran:?}");
    let times: Vec<i64> =
        table.iter().map(|(a, _, _)| chrono::DateTime::parse_from_rfc3339(a).unwrap().timestamp_millis()).collect();
    let gaps: BTreeSet<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, BTreeSet::from([2000]), "{times:?}");
}

/// Issue 15 in a cluster: host keys read from an instance's console by one replica are the
/// cluster's. A run on replica a reads the console and records the keys in the table; then the
/// console lists another key (a forged console, or one rebuilt in place); a run on replica b (its
/// own store, nothing recorded there) verifies against the table's keys, which the host still
/// serves, and runs. Read from the console instead, b would refuse the host.
#[test]
fn console_host_keys_are_shared_by_the_replicas() {
    let c = Cluster::new("");
    let tag = unique("sharedkeys");
    let h = fleet(1, &[("T", &tag)], &[]);
    c.ctx.write_job("keys", &job("T", &tag, &["true"], "", "[ssh]\nhost_keys = \"console\""));
    let run = |replica: &str| {
        let out = c
            .ctx
            .opsd()
            .env("OPSD_STATE_DIR", c.state_dir(replica))
            .args(["run", "keys", "--output", "json"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), doc)
    };
    let (code, doc) = run("a");
    assert_eq!(code, Some(0), "{doc}");
    let items = c.items(&format!("hostkeys#{}", h[0].id));
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["sk"].as_s().unwrap(), "console");
    let sdk = sdk_config(&c.rt);
    let wrong = aws_sdk_ec2::types::Tag::builder().key("moto:console-host-keys").value("wrong").build();
    c.rt.block_on(aws_sdk_ec2::Client::new(&sdk).create_tags().resources(&h[0].id).tags(wrong).send()).unwrap();
    let (code, doc) = run("b");
    assert_eq!(code, Some(0), "replica b did not use the cluster's keys: {doc}");
    // b keeps a copy in its own store.
    let out = c
        .ctx
        .opsd()
        .env("OPSD_STATE_DIR", c.state_dir("b"))
        .args(["hosts", "keys", &h[0].id, "--output", "json"])
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    // The control: an opsd outside the cluster reads the console itself, and refuses the host.
    let alone = Ctx::new();
    alone.write_job("keys", &job("T", &tag, &["true"], "", "[ssh]\nhost_keys = \"console\""));
    let (code, doc) = alone.run_json("keys", &[]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(hosts_by_id(&doc)[&h[0].id]["error_kind"], "host_key", "{doc}");
}
