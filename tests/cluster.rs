//! Several `opsd daemon` replicas acting as one through a DynamoDB table (DynamoDB Local, AWS's own
//! emulator, in the sandbox): every firing runs exactly once across them.
//!
//! Each test has its own table and its own replicas (real daemons with their own state directories).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use support::cluster::Cluster;
use support::daemon::wait_for;
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
