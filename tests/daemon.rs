//! `opsd daemon` as a real process against the sandbox (moto + OpenSSH on loopback): firing,
//! overlap, reload, shutdown, sd_notify, metrics, catch-up, and the systemd unit.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::daemon::{metric, scrape, wait_for, Daemon};
use support::*;

/// The job's recorded runs and firings, oldest first.
fn runs(ctx: &Ctx, job: &str) -> Vec<Value> {
    let h = ctx.json(&["history", job, "--limit", "10000"]);
    let mut v = h["runs"].as_array().unwrap().clone();
    v.reverse();
    v
}

fn ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().into()
}

fn scheduled(job_text: &str, schedule: &str, extra: &str) -> String {
    format!("schedule = \"{schedule}\"\n{extra}\n{job_text}")
}

/// Consecutive firing times of a run list, in milliseconds apart.
fn firing_gaps(runs: &[Value]) -> Vec<i64> {
    let t: Vec<_> = runs.iter().map(|r| ts(&r["scheduled_for"])).collect();
    t.windows(2).map(|w| (w[1] - w[0]).num_milliseconds()).collect()
}

/// `opsd jobs`: the next three firings, in the job's zone and in UTC.
#[test]
fn jobs_lists_the_next_three_firings() {
    let ctx = Ctx::new();
    let text = job("T", "x", &["true"], "", "");
    ctx.write_job("berlin", &scheduled(&text, "cron(0 3 * * ? *)", "timezone = \"Europe/Berlin\""));
    ctx.write_job("manual", &text);
    let out = ctx.run(&["jobs"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let next: Vec<&str> = stdout.lines().filter(|l| l.trim_start().starts_with("next ")).collect();
    assert_eq!(next.len(), 3, "{stdout}");
    for l in next {
        // 03:00 in Berlin is 02:00 UTC in winter, 01:00 UTC in summer.
        let ok = (l.contains(" 03:00:00 CET ") && l.contains(" 02:00:00 UTC"))
            || (l.contains(" 03:00:00 CEST ") && l.contains(" 01:00:00 UTC"));
        assert!(ok, "{l}");
    }
    assert!(stdout.contains("cron(0 3 * * ? *) Europe/Berlin"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("manual") && l.contains("(by hand)")), "{stdout}");
}

/// Test 2: a seconds-level schedule fires repeatedly; each firing is a recorded run with every host.
#[test]
fn scheduled_job_fires_repeatedly_and_records_every_host() {
    let ctx = Ctx::new();
    let tag = unique("tick");
    let hosts = fleet(2, &[("T", &tag)], &[]);
    ctx.write_job("tick", &scheduled(&job("T", &tag, &["echo tick"], "", ""), "@every 1s", ""));
    ctx.write_job("jit", &scheduled(&job("T", &tag, &["true"], "", ""), "@every 2s", "jitter = \"1500ms\""));
    let d = Daemon::start(&ctx, &[]);
    wait_for("three runs", 30, &d, || runs(&ctx, "tick").len() >= 3);
    // `opsd run` beside the daemon: works, and lands in the same store.
    let (code, doc) = ctx.run_json("tick", &[]);
    assert_eq!(code, 0, "{doc}");
    wait_for("four jittered runs", 30, &d, || runs(&ctx, "jit").len() >= 4);
    let log = d.stop_ok();
    assert!(log.contains("opsd daemon started") && log.contains("jobs=2"), "no banner:\n{log}");
    let all = runs(&ctx, "tick");
    let manual: Vec<&Value> = all.iter().filter(|r| r["trigger"] == "manual").collect();
    assert_eq!(manual.len(), 1, "{all:?}");
    assert_eq!(manual[0]["id"], doc["run_id"]);
    let scheduled_runs: Vec<Value> = all.iter().filter(|r| r["trigger"] != "manual").cloned().collect();
    for r in &scheduled_runs {
        assert_eq!((r["trigger"].as_str(), r["outcome"].as_str()), (Some("schedule"), Some("succeeded")), "{r}");
        assert_eq!(r["hosts_ok"], 2, "{r}");
    }
    // Jitter: each run starts a random delay in [0, 1.5 s) after its firing time (plus opsd's own
    // start-up of a run, well under 300 ms here); not all at once.
    let delays: Vec<i64> =
        runs(&ctx, "jit").iter().map(|r| (ts(&r["started_at"]) - ts(&r["scheduled_for"])).num_milliseconds()).collect();
    assert!(delays.iter().all(|d| (0..1800).contains(d)), "{delays:?}");
    assert!(delays.iter().any(|d| *d > 100), "no jitter: {delays:?}");
    let gaps = firing_gaps(&scheduled_runs);
    assert!(gaps.iter().all(|g| *g == 1000), "firings not 1 s apart: {gaps:?}");
    let detail = ctx.json(&["history", "--run", &scheduled_runs[0]["id"].to_string()]);
    let mut got: Vec<String> = detail["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} {}", h["host"]["instance_id"].as_str().unwrap(), h["commands"][0]["stdout"]))
        .collect();
    got.sort();
    let mut want: Vec<String> = hosts.iter().map(|h| format!("{} \"tick\\n\"", h.id)).collect();
    want.sort();
    assert_eq!(got, want);
}

/// Test 3: a job slower than its period, under each overlap policy.
#[test]
fn overlap_skip_queue_and_allow() {
    let ctx = Ctx::new();
    let tag = unique("overlap");
    fleet(1, &[("T", &tag)], &[]);
    for policy in ["skip", "queue", "allow"] {
        let text = job("T", &tag, &["sleep 2.5"], "", "");
        ctx.write_job(policy, &scheduled(&text, "@every 1s", &format!("overlap = \"{policy}\"")));
    }
    let d = Daemon::start(&ctx, &[("OPSD_SHUTDOWN_GRACE", "30s")]);
    wait_for("two finished runs of each job", 40, &d, || {
        ["skip", "queue", "allow"]
            .iter()
            .all(|j| runs(&ctx, j).iter().filter(|r| r["outcome"] == "succeeded").count() >= 2)
    });
    let (code, _, log) = d.stop(Duration::from_secs(40));
    assert_eq!(code, Some(0), "{log}");

    let done =
        |runs: &[Value]| -> Vec<Value> { runs.iter().filter(|r| r["outcome"] == "succeeded").cloned().collect() };
    let overlapping = |runs: &[Value]| runs.windows(2).any(|w| ts(&w[1]["started_at"]) < ts(&w[0]["ended_at"]));

    // skip: firings during a run are recorded as skipped with the reason; runs never overlap.
    let skip = runs(&ctx, "skip");
    let skipped: Vec<&Value> = skip.iter().filter(|r| r["outcome"] == "skipped").collect();
    assert!(!skipped.is_empty(), "no skipped firing: {skip:?}");
    assert!(
        skipped.iter().all(|r| r["reason"].as_str().unwrap().contains("still running (overlap = skip)")),
        "{skip:?}"
    );
    assert!(!overlapping(&done(&skip)), "skip let runs overlap: {skip:?}");

    // queue: one firing waits and starts when the previous run ends; a second waiting one is skipped.
    let queue = runs(&ctx, "queue");
    let qdone = done(&queue);
    assert!(!overlapping(&qdone), "queue let runs overlap: {queue:?}");
    let waited = qdone.windows(2).any(|w| {
        let gap = (ts(&w[1]["started_at"]) - ts(&w[0]["ended_at"])).num_milliseconds();
        let late = (ts(&w[1]["started_at"]) - ts(&w[1]["scheduled_for"])).num_milliseconds();
        (0..1000).contains(&gap) && late > 1000
    });
    assert!(waited, "no queued firing started right after the previous run: {queue:?}");
    assert!(
        queue.iter().any(|r| r["outcome"] == "skipped" && r["reason"].as_str().unwrap().contains("already queued")),
        "{queue:?}"
    );

    // allow: runs overlap, nothing is skipped.
    let allow = runs(&ctx, "allow");
    assert!(allow.iter().all(|r| r["outcome"] != "skipped"), "{allow:?}");
    assert!(overlapping(&done(&allow)), "allow never overlapped: {allow:?}");
}

/// Test 4: add, change, break and remove job files while the daemon runs.
#[test]
fn reload_applies_changes_and_keeps_the_last_good_version() {
    let ctx = Ctx::new();
    let tag = unique("reload");
    fleet(1, &[("T", &tag)], &[]);
    let write =
        |name: &str, cmd: &str| ctx.write_job(name, &scheduled(&job("T", &tag, &[cmd], "", ""), "@every 1s", ""));
    let a = write("a", "echo a");
    write("b", "echo b");
    let c = write("c", "echo c");
    let d = Daemon::start(&ctx, &[]);
    wait_for("two runs of a, b and c", 30, &d, || ["a", "b", "c"].iter().all(|j| runs(&ctx, j).len() >= 2));

    let changed_at = chrono::Utc::now();
    write("d", "echo d");
    write("b", "echo b2");
    std::fs::write(&a, "schedule = \"@every 1s\"\n[target]\ntags = 5\n[run]\ncommands = [\"echo broken\"]\n").unwrap();
    std::fs::remove_file(&c).unwrap();
    let last_command = |job: &str| -> String {
        let r = runs(&ctx, job);
        let Some(last) = r.iter().rev().find(|r| r["outcome"] == "succeeded") else { return String::new() };
        let detail = ctx.json(&["history", "--run", &last["id"].to_string()]);
        detail["hosts"][0]["commands"][0]["command"].as_str().unwrap_or_default().to_string()
    };
    wait_for("d to run and b to run its new command", 30, &d, || {
        runs(&ctx, "d").len() >= 2 && last_command("b") == "echo b2"
    });
    // A few more firings after the reload, to see that nothing stalls.
    std::thread::sleep(Duration::from_secs(3));
    let log = d.stop_ok();

    // The broken file is reported with file, line and field, and its last good version kept firing.
    assert!(log.contains("a.toml:3:8: target.tags:"), "no located error for a.toml:\n{log}");
    assert!(log.contains("last good version stays scheduled: a"), "{log}");
    let ra = runs(&ctx, "a");
    let after = ts(&ra.last().unwrap()["scheduled_for"]);
    assert!(after > changed_at + chrono::Duration::seconds(2), "a stopped firing after its file broke: {ra:?}");
    assert_eq!(last_command("a"), "echo a");
    // a and b never missed a firing (b's schedule did not change, so it kept its phase).
    for job in ["a", "b"] {
        let gaps = firing_gaps(&runs(&ctx, job));
        assert!(gaps.iter().all(|g| *g == 1000), "{job} missed a firing around the reload: {gaps:?}");
    }
    // c stopped: no firing after the reload (one may have been due while the file was being removed).
    let late_c =
        runs(&ctx, "c").iter().filter(|r| ts(&r["scheduled_for"]) > changed_at + chrono::Duration::seconds(2)).count();
    assert_eq!(late_c, 0, "c kept firing after its file was removed");
}

/// SIGHUP re-reads the config: a job that failed under the old [ssh] settings succeeds under the new.
#[test]
fn sighup_reloads_the_config() {
    let ctx = Ctx::new();
    let tag = unique("hup");
    fleet(1, &[("T", &tag)], &[]);
    let good = std::fs::read_to_string(ctx.config()).unwrap();
    let port = env("OPSD_SANDBOX_SSH_PORT");
    // A port nothing listens on (the sandbox's sshds all use the same one).
    std::fs::write(ctx.config(), good.replace(&format!("port = {port}"), "port = 1")).unwrap();
    ctx.write_job("hup", &scheduled(&job("T", &tag, &["true"], "max_errors = \"100%\"", ""), "@every 1s", ""));
    let d = Daemon::start(&ctx, &[]);
    wait_for("a failed run", 30, &d, || runs(&ctx, "hup").iter().any(|r| r["outcome"] == "failed"));
    std::fs::write(ctx.config(), &good).unwrap();
    let sent = chrono::Utc::now();
    d.signal("-HUP");
    wait_for("a successful run after SIGHUP", 30, &d, || {
        runs(&ctx, "hup").iter().any(|r| r["outcome"] == "succeeded" && ts(&r["started_at"]) > sent)
    });
    let log = d.stop_ok();
    assert!(log.contains("SIGHUP: reloading the config and the jobs"), "{log}");
}

/// Test 5: SIGTERM during long jobs: one finishes within shutdown_grace, the other is cancelled,
/// killed on the host and recorded; the daemon exits 0.
#[test]
fn sigterm_lets_jobs_finish_within_the_grace_then_cancels() {
    let ctx = Ctx::new();
    let tag = unique("grace");
    fleet(1, &[("T", &tag)], &[]);
    let short = format!("sleep 3.{}", std::process::id() % 1000);
    let long = format!("sleep 8{}", std::process::id() % 1000);
    ctx.write_job("short", &scheduled(&job("T", &tag, &[&short], "", ""), "@every 1s", ""));
    ctx.write_job("long", &scheduled(&job("T", &tag, &[&long], "timeout = \"10m\"", ""), "@every 1s", ""));
    let d = Daemon::start(&ctx, &[("OPSD_SHUTDOWN_GRACE", "6s")]);
    wait_for("both commands to run on the host", 30, &d, || {
        remote_processes(&short) == 1 && remote_processes(&long) == 1
    });
    let (code, took, log) = d.stop(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    assert!(took >= Duration::from_secs(5), "exited after {took:?}, before the 6s grace was over:\n{log}");
    assert!(took < Duration::from_secs(20), "took {took:?} to stop:\n{log}");
    let s = runs(&ctx, "short");
    assert_eq!(s.last().unwrap()["outcome"], "succeeded", "the short run did not finish within the grace: {s:?}");
    let l = runs(&ctx, "long");
    let last = l.last().unwrap();
    assert_eq!(last["outcome"], "cancelled", "{l:?}");
    assert!(last["reason"].as_str().unwrap().contains("cancelled"), "{last}");
    assert!(l.iter().all(|r| r["outcome"] != "running"), "{l:?}");
    assert_eq!(wait_for_remote(&long, 0, 50), 0, "`{long}` still runs on the host after the daemon stopped");
}

/// Test 6: sd_notify: READY=1 after the jobs are loaded, WATCHDOG=1 when asked, STOPPING=1 on stop.
/// Also: a second daemon on the same state directory refuses to start.
#[test]
fn sd_notify_ready_watchdog_stopping() {
    use std::os::unix::net::UnixDatagram;
    let ctx = Ctx::new();
    let tag = unique("notify");
    ctx.write_job("n1", &scheduled(&job("T", &tag, &["true"], "", ""), "@daily", ""));
    ctx.write_job("n2", &job("T", &tag, &["true"], "", ""));
    let sock_path = ctx.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let d = Daemon::start(
        &ctx,
        &[("NOTIFY_SOCKET", &path_str(&sock_path)), ("WATCHDOG_USEC", "400000"), ("OPSD_SHUTDOWN_GRACE", "5s")],
    );
    let mut got: Vec<String> = Vec::new();
    let read_until = |want: &str, secs: u64, got: &mut Vec<String>| {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                if got.last().unwrap().lines().any(|l| l == want) {
                    return;
                }
            }
        }
        panic!("no {want} within {secs}s; got {got:?}");
    };
    read_until("READY=1", 20, &mut got);
    let ready = got.last().unwrap().clone();
    assert!(ready.contains("STATUS=2 jobs, 1 scheduled; next: n1 at"), "{ready}");
    let before = got.len();
    read_until("WATCHDOG=1", 5, &mut got);
    read_until("WATCHDOG=1", 5, &mut got);
    assert!(got[before..].iter().filter(|m| m.trim() == "WATCHDOG=1").count() >= 2, "{got:?}");

    // A second daemon with the same state_dir: refused with 69, the first unaffected.
    let out = ctx.opsd().arg("daemon").env_remove("NOTIFY_SOCKET").output().unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another opsd daemon"), "{out:?}");

    d.signal("-TERM");
    read_until("STOPPING=1", 10, &mut got);
    // The stop timeout follows shutdown_grace (5 s) plus what follows it (60 s).
    assert!(got.last().unwrap().lines().any(|l| l == "EXTEND_TIMEOUT_USEC=65000000"), "{got:?}");
    let (code, _, log) = d.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{log}");
}

/// Test 7: the metrics endpoint serves the named series with values that match the store.
#[test]
fn metrics_endpoint_serves_the_series() {
    let ctx = Ctx::with_config_extra("");
    let tag = unique("metrics");
    fleet(2, &[("T", &tag)], &[]);
    ctx.write_job("m", &scheduled(&job("T", &tag, &["true"], "", ""), "@every 2s", ""));
    ctx.write_job(
        "broken",
        "schedule = \"rate(1 minutes)\"\n[target]\ntags = { T = \"x\" }\n[run]\ncommands = [\"true\"]\n",
    );
    let d = Daemon::start(&ctx, &[("OPSD_METRICS_LISTEN", "127.0.0.1:0")]);
    let mut addr = String::new();
    wait_for("the banner with the metrics address", 20, &d, || {
        addr = d.metrics_addr().unwrap_or_default();
        !addr.is_empty()
    });
    let mut text = String::new();
    wait_for("two successful runs in the metrics", 30, &d, || {
        text = scrape(&addr);
        metric(&text, "opsd_runs_total{job=\"m\",outcome=\"succeeded\"}").unwrap_or(0.0) >= 2.0
    });
    let n = metric(&text, "opsd_runs_total{job=\"m\",outcome=\"succeeded\"}").unwrap();
    assert_eq!(metric(&text, "opsd_hosts_total{job=\"m\",status=\"ok\"}"), Some(2.0 * n), "{text}");
    assert_eq!(metric(&text, "opsd_run_duration_seconds_count{job=\"m\"}"), Some(n), "{text}");
    assert_eq!(metric(&text, "opsd_job_file_errors_total{job=\"broken\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "opsd_jobs_loaded"), Some(1.0), "{text}");
    assert!(text.contains("opsd_build_info{version=\"") && text.contains(",commit=\""), "{text}");
    // The last success is the end of the n-th run in the store.
    let last = metric(&text, "opsd_last_success_timestamp_seconds{job=\"m\"}").unwrap();
    let r = runs(&ctx, "m");
    let nth = &r[n as usize - 1];
    let ended = ts(&nth["ended_at"]).timestamp_millis() as f64 / 1000.0;
    assert!((last - ended).abs() < 0.002, "last success {last} != run {} ended {ended}", nth["id"]);
    d.stop_ok();
}

/// Test 8: catch_up: a firing missed while the daemon was down runs once at start; without
/// catch_up it does not.
#[test]
fn catch_up_runs_a_missed_firing_once() {
    let ctx = Ctx::new();
    let tag = unique("catchup");
    fleet(1, &[("T", &tag)], &[]);
    let text = job("T", &tag, &["true"], "", "");
    ctx.write_job("cu", &scheduled(&text, "@every 3s", "catch_up = true"));
    ctx.write_job("nc", &scheduled(&text, "@every 3s", ""));
    let d = Daemon::start(&ctx, &[]);
    wait_for("a run of each", 30, &d, || runs(&ctx, "cu").len() == 1 && runs(&ctx, "nc").len() == 1);
    d.stop_ok();
    let last = ts(&runs(&ctx, "cu")[0]["scheduled_for"]);
    // Down past the next firing.
    while chrono::Utc::now() < last + chrono::Duration::milliseconds(3500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = chrono::Utc::now();
    let d = Daemon::start(&ctx, &[]);
    wait_for("the catch-up run", 20, &d, || runs(&ctx, "cu").iter().any(|r| r["trigger"] == "catch-up"));
    std::thread::sleep(Duration::from_millis(1500));
    d.stop_ok();
    let cu = runs(&ctx, "cu");
    let catch: Vec<&Value> = cu.iter().filter(|r| r["trigger"] == "catch-up").collect();
    assert_eq!(catch.len(), 1, "{cu:?}");
    assert_eq!(catch[0]["outcome"], "succeeded");
    assert!(ts(&catch[0]["started_at"]) < started + chrono::Duration::seconds(2), "{:?}", catch[0]);
    assert!(ts(&catch[0]["scheduled_for"]) > last, "{:?}", catch[0]);
    assert!(runs(&ctx, "nc").iter().all(|r| r["trigger"] == "schedule"));
}

/// The systemd unit passes `systemd-analyze verify` without a warning and carries the hardening.
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(root().join("systemd/opsd.service")).unwrap();
    for key in [
        "Type=notify",
        "StateDirectory=opsd",
        "ConfigurationDirectory=opsd",
        "User=opsd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(key), "systemd/opsd.service lacks {key:?}");
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("opsd.service");
    std::fs::write(&copy, unit.replace("/usr/bin/opsd", env!("CARGO_BIN_EXE_opsd"))).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze is missing: apt-get install -y systemd (scripts/sandbox up installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
}

/// History older than `history_retention` is deleted when the daemon starts, with its hosts and
/// output, but each job's latest run stays (and so `opsd history` still answers for every job).
#[test]
fn history_older_than_the_retention_is_deleted() {
    let ctx = Ctx::with_config_extra("");
    let tag = unique("retention");
    fleet(1, &[("T", &tag)], &[]);
    ctx.write_job("old", &job("T", &tag, &["echo kept-or-not"], "", ""));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, doc) = ctx.run_json("old", &[]);
        assert_eq!(code, 0, "{doc}");
        ids.push(doc["run_id"].clone());
    }
    assert_eq!(runs(&ctx, "old").len(), 3);
    std::thread::sleep(Duration::from_millis(1500));
    let d = Daemon::start(&ctx, &[("OPSD_HISTORY_RETENTION", "1s")]);
    wait_for("the old runs deleted", 20, &d, || runs(&ctx, "old").len() == 1);
    let log = d.stop_ok();
    assert!(
        log.contains("history: deleted what is older than history_retention (1s)") && log.contains("runs=2"),
        "{log}"
    );
    let left = runs(&ctx, "old");
    assert_eq!(left[0]["id"], ids[2], "the latest run is the one kept: {left:?}");
    // The deleted runs' host records went with them.
    let gone = ctx.run(&["history", "--run", &ids[0].to_string()]);
    assert_ne!(gone.status.code(), Some(0), "{}", String::from_utf8_lossy(&gone.stdout));
    let kept = ctx.json(&["history", "--run", &ids[2].to_string()]);
    assert_eq!(kept["hosts"].as_array().map(Vec::len), Some(1), "{kept}");
}

/// Issue 14, 3.11: TOFU pins of instances that are gone are deleted by the daemon's retention pass
/// (at start, then hourly); the pins of live instances stay.
#[test]
fn pins_of_instances_that_are_gone_are_pruned() {
    let ctx = Ctx::new();
    let tag = unique("prune");
    let hosts = fleet(2, &[("T", &tag)], &[]);
    ctx.write_job("tofu", &job("T", &tag, &["true"], "", "[ssh]\nhost_keys = \"tofu\""));
    let (code, doc) = ctx.run_json("tofu", &[]);
    assert_eq!(code, 0, "{doc}");
    let db = ctx.dir.path().join("state/opsd.db");
    let pinned = || -> Vec<String> {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c.prepare("SELECT host_id FROM host_keys ORDER BY host_id").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let mut both: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();
    both.sort();
    assert_eq!(pinned(), both);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(&rt));
    rt.block_on(ec2.terminate_instances().instance_ids(&hosts[0].id).send()).unwrap();
    let d = Daemon::start(&ctx, &[]);
    wait_for("the gone instance's pin to be deleted", 30, &d, || pinned() == vec![hosts[1].id.clone()]);
    let log = d.stop_ok();
    assert!(log.contains("deleted the TOFU pins of 1 instances that are gone"), "{log}");
}

/// Issue 14, 3.15: `/metrics` cannot be starved by keep-alive connections. Sixteen clients keep
/// their connections busy (a request every 2 s, as dashboards do) and sixteen more never send a
/// byte; a new scraper is still answered at once, and the silent connections are closed.
#[test]
fn idle_connections_cannot_starve_the_metrics_endpoint() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let ctx = Ctx::new();
    let d = Daemon::start(&ctx, &[("OPSD_METRICS_LISTEN", "127.0.0.1:0")]);
    d.metrics();
    let addr = d.metrics_addr().unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..16)
        .map(|_| {
            let (addr, done) = (addr.clone(), done.clone());
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while !done.load(Ordering::SeqCst) {
                    if write!(s, "GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").is_err()
                        || s.read(&mut buf).unwrap_or(0) == 0
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            })
        })
        .collect();
    let silent: Vec<_> = (0..16).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let read = s.read_to_string(&mut out);
    assert!(read.is_ok() && out.starts_with("HTTP/1.1 200"), "the scrape was not answered: {read:?} {out:?}");
    // The silent connections are closed by the endpoint (a read sees the end).
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).unwrap_or(1), 0, "a silent connection was left open");
    }
    done.store(true, Ordering::SeqCst);
    for t in busy {
        t.join().unwrap();
    }
    d.stop_ok();
}

/// deploy/prometheus/opsd-rules.yml and deploy/grafana/opsd.json name only series opsd serves, and
/// only recording rules the rules file defines: a renamed metric breaks this test, not an alert.
#[test]
fn the_shipped_alerts_and_dashboard_use_series_opsd_serves() {
    let ctx = Ctx::with_config_extra("");
    let d = Daemon::start(&ctx, &[("OPSD_METRICS_LISTEN", "127.0.0.1:0")]);
    let text = d.metrics();
    d.stop_ok();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/opsd-rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root().join("deploy/grafana/opsd.json")).unwrap();
    let names = |s: &str, prefix: &str| -> BTreeSet<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    // What opsd registers: every `register("name", …)` of the wings' metrics modules. A family
    // with no series yet (no lifecycle action in this test) is registered but not in the scrape.
    let mut registered = BTreeSet::new();
    for dir in ["src", "src/jobs", "src/lifecycle", "src/capacity", "src/cluster"] {
        let src = std::fs::read_to_string(root().join(dir).join("metrics.rs")).unwrap();
        for chunk in src.split("register(").skip(1) {
            if let Some(name) = chunk.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()) {
                registered.insert(format!("opsd_{name}"));
            }
        }
    }
    assert!(registered.contains("opsd_runs") && registered.contains("opsd_lifecycle_actions"), "{registered:?}");
    let served = |name: &str| {
        // A counter `opsd_x` is served as `opsd_x_total`; a histogram as `_bucket`, `_sum`,
        // `_count`; an info metric as `_info`.
        let base =
            ["_total", "_bucket", "_sum", "_count", "_info"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        registered.contains(base) || text.contains(&format!("# TYPE {name} "))
    };
    // Those with series now are served under these names.
    for name in ["opsd_jobs_loaded", "opsd_lifecycle_dead_letter_messages", "opsd_capacity_unplaced_tasks"] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is not served:\n{text}");
    }
    let used: BTreeSet<String> = names(&rules, "opsd_").into_iter().chain(names(&dashboard, "opsd_")).collect();
    assert!(used.len() >= 12, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !served(n)).collect();
    assert!(missing.is_empty(), "named in deploy/ but not served: {missing:?}\n{text}");
    let recorded: BTreeSet<String> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- record: ")).map(str::to_string).collect();
    let wanted: BTreeSet<String> = names(&dashboard, "opsd:").into_iter().collect();
    assert!(wanted.is_subset(&recorded), "the dashboard uses {wanted:?}; the rules record {recorded:?}");
}

/// `[run] script` in the daemon (issue 16): each firing reads the script afresh and records its
/// SHA-256, so an edit shows in the next run's record; a script gone since the job was loaded makes
/// that firing an `error` with the reason, and the daemon goes on.
#[test]
fn each_firing_ships_the_script_as_it_is_then() {
    let ctx = Ctx::new();
    let tag = unique("shipped");
    fleet(1, &[("T", &tag)], &[]);
    let scripts = ctx.dir.path().join("jobs/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let script = scripts.join("tick.sh");
    std::fs::write(&script, "echo one\n").unwrap();
    let text = format!("[target]\ntags = {{ T = \"{tag}\" }}\n[run]\nscript = \"scripts/tick.sh\"\n");
    ctx.write_job("tick", &scheduled(&text, "@every 1s", ""));
    let d = Daemon::start(&ctx, &[]);
    wait_for("a run", 30, &d, || runs(&ctx, "tick").iter().any(|r| r["outcome"] == "succeeded"));
    std::fs::write(&script, "echo two\n").unwrap();
    let sha_of = |t: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    wait_for("a run of the edited script", 30, &d, || {
        runs(&ctx, "tick").iter().any(|r| r["script_sha256"] == sha_of("echo two\n").as_str())
    });
    std::fs::remove_file(&script).unwrap();
    wait_for("a firing without its script", 30, &d, || runs(&ctx, "tick").iter().any(|r| r["outcome"] == "error"));
    assert!(d.running());
    d.stop_ok();
    let all = runs(&ctx, "tick");
    assert!(all.iter().any(|r| r["script_sha256"] == sha_of("echo one\n").as_str()), "{all:?}");
    let err = all.iter().find(|r| r["outcome"] == "error").unwrap();
    assert!(err["reason"].as_str().unwrap().contains("cannot read the script"), "{err}");
    assert!(err["script_sha256"].is_null(), "{err}");
}
