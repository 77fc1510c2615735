//! `opsd run` end to end, against moto and a real OpenSSH server on loopback.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

/// A [run] setting for tests whose hosts must all start even when some fail.
const ALL_MAY_FAIL: &str = "max_errors = \"100%\"";

fn ids(v: &[Instance]) -> BTreeSet<String> {
    v.iter().map(|i| i.id.clone()).collect()
}

fn dry_run_ids(ctx: &Ctx, job: &str) -> (i32, BTreeSet<String>) {
    let (code, doc) = ctx.run_json(job, &["--dry-run"]);
    let ids = doc["hosts"].as_array().unwrap().iter().map(|h| h["instance_id"].as_str().unwrap().to_string()).collect();
    (code, ids)
}

/// Case 1: Exactly the running instances with every tag matching are targeted; list values mean "any of".
#[test]
fn tag_targeting_selects_running_instances_with_all_tags() {
    let ctx = Ctx::new();
    let team = unique("team");
    let t = team.as_str();
    let dev = fleet(2, &[("Team", t), ("Env", "dev")], &["--no-listen"]);
    let qa = fleet(1, &[("Team", t), ("Env", "qa")], &["--no-listen"]);
    fleet(1, &[("Team", t), ("Env", "prod")], &["--no-listen"]);
    fleet(1, &[("Team", t), ("Env", "dev")], &["--no-listen", "--state", "stopped"]);
    fleet(1, &[("Team", t)], &["--no-listen"]);
    fleet(1, &[("Env", "dev")], &["--no-listen"]);

    ctx.write_job(
        "dev",
        &format!("[target]\ntags = {{ Team = \"{t}\", Env = \"dev\" }}\n[run]\ncommands = [\"true\"]\n"),
    );
    let (code, got) = dry_run_ids(&ctx, "dev");
    assert_eq!(code, 0);
    assert_eq!(got, ids(&dev));

    ctx.write_job(
        "devqa",
        &format!("[target]\ntags = {{ Team = \"{t}\", Env = [\"dev\", \"qa\"] }}\n[run]\ncommands = [\"true\"]\n"),
    );
    let (_, got) = dry_run_ids(&ctx, "devqa");
    assert_eq!(got, ids(&dev).union(&ids(&qa)).cloned().collect());

    ctx.write_job(
        "stopped",
        &format!("[target]\ntags = {{ Team = \"{t}\", Env = \"dev\" }}\nstates = [\"stopped\"]\n[run]\ncommands = [\"true\"]\n"),
    );
    let (_, got) = dry_run_ids(&ctx, "stopped");
    assert_eq!(got.len(), 1);
    assert!(got.is_disjoint(&ids(&dev)));
}

/// Case 1: A fleet larger than one DescribeInstances page (the tests' page_size is 100) is resolved completely.
#[test]
fn fleet_larger_than_a_page_is_fully_resolved() {
    let ctx = Ctx::new();
    let tag = unique("big");
    let big = fleet(250, &[("Big", &tag)], &["--no-listen"]);
    ctx.write_job("big", &job("Big", &tag, &["true"], "", ""));
    let (code, got) = dry_run_ids(&ctx, "big");
    assert_eq!(code, 0);
    assert_eq!(got.len(), 250);
    assert_eq!(got, ids(&big));
}

/// Case 2: stdout, stderr and exit status of each command are captured and recorded; the first failing
/// command ends that host.
#[test]
fn per_command_results_are_captured_and_the_first_failure_ends_the_host() {
    let ctx = Ctx::new();
    let tag = unique("results");
    let hosts = fleet(2, &[("T", &tag)], &[]);
    let marker = ctx.evidence.join("later-command-ran");
    let later = format!("touch {}", marker.display());
    ctx.write_job(
        "results",
        // Every host must run even after the first fails (the default budget, 10% of 2, is 0).
        &job("T", &tag, &["echo out:$SSH_CONNECTION; echo err-line >&2", "exit 3", &later], ALL_MAY_FAIL, ""),
    );
    let (code, doc) = ctx.run_json("results", &[]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["counts"]["failed"], 2);
    let by_id = hosts_by_id(&doc);
    for h in &hosts {
        let r = &by_id[&h.id];
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error_kind"], "command_failed");
        assert_eq!(r["exit_status"], 3);
        let cmds = r["commands"].as_array().unwrap();
        assert_eq!(cmds.len(), 2, "the third command must not run: {r}");
        assert!(cmds[0]["stdout"].as_str().unwrap().contains(&format!(" {} ", h.address)), "{r}");
        assert_eq!(cmds[0]["stderr"], "err-line\n");
        assert_eq!(cmds[0]["exit_status"], 0);
        assert_eq!(cmds[1]["exit_status"], 3);
    }
    assert!(!marker.exists(), "a command after the failing one ran");

    // The same, as recorded in the history.
    let id = doc["run_id"].as_i64().unwrap().to_string();
    let rec = ctx.json(&["history", "--run", &id]);
    assert_eq!(rec["run"]["outcome"], "failed");
    let recorded = hosts_by_id(&rec);
    for h in &hosts {
        assert_eq!(recorded[&h.id]["commands"], by_id[&h.id]["commands"]);
        assert_eq!(recorded[&h.id]["host"]["address"], h.address);
    }
    let text = ctx.run(&["history", "--run", &id]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("! err-line") && text.contains("$ exit 3   (exit 3)"), "{text}");

    // Text output (not a TTY here): host-prefixed lines as output arrives, then the summary.
    let out = ctx.run(&["run", "results"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for h in &hosts {
        assert!(text.contains(&format!("[{}] | out:127.0.0.1", h.id)), "{text}");
        assert!(text.contains(&format!("[{}] ! err-line", h.id)), "{text}");
        assert!(text.contains(&format!("[{}] FAILED (command_failed)", h.id)), "{text}");
    }
    assert!(text.contains("results: 2 hosts, 0 ok, 2 failed"), "{text}");
}

/// Case 3: Unreachable hosts and a rejected key are recorded as connect/auth errors; the others succeed;
/// a host that never answers is cut at connect_timeout.
#[test]
fn unreachable_and_rejected_hosts_fail_alone_within_connect_timeout() {
    let ctx = Ctx::new();
    let tag = unique("reach");
    let good = fleet(2, &[("T", &tag)], &[]);
    let refused = fleet(1, &[("T", &tag)], &["--no-listen"]);
    let silent = fleet(1, &[("T", &tag)], &["--no-listen"]);
    let rejected = fleet(1, &[("T", &tag)], &["--auth", "reject"]);
    // Accepts TCP connections (the kernel's backlog) but never speaks SSH.
    let port: u16 = env("OPSD_SANDBOX_SSH_PORT").parse().unwrap();
    let _blackhole = std::net::TcpListener::bind((silent[0].address.as_str(), port)).unwrap();

    // The refused host fails at once; without ALL_MAY_FAIL the default budget (10% of 5 = 0) could
    // keep the good hosts from starting, depending on which task runs first.
    ctx.write_job("reach", &job("T", &tag, &["echo hi"], ALL_MAY_FAIL, "[ssh]\nconnect_timeout = \"5s\""));
    let (code, doc) = ctx.run_json("reach", &[]);
    assert_eq!(code, 1, "{doc}");
    let by_id = hosts_by_id(&doc);
    for h in &good {
        assert_eq!(by_id[&h.id]["status"], "ok", "{}", by_id[&h.id]);
    }
    assert_eq!(by_id[&refused[0].id]["error_kind"], "connect");
    assert!(by_id[&refused[0].id]["error"].as_str().unwrap().contains("refused"), "{}", by_id[&refused[0].id]);
    let s = &by_id[&silent[0].id];
    assert_eq!(s["error_kind"], "connect");
    assert!(s["error"].as_str().unwrap().contains("connect_timeout"), "{s}");
    assert_eq!(by_id[&rejected[0].id]["error_kind"], "auth", "{}", by_id[&rejected[0].id]);
    // Hosts run in parallel, so the silent host bounds the run at about connect_timeout (5 s): a
    // missing deadline would hold it for the kernel's TCP timeouts (minutes).
    let host_secs = secs_between(&s["started_at"], &s["ended_at"]);
    assert!((4.9..10.0).contains(&host_secs), "the silent host took {host_secs}s");
    let run_secs = secs_between(&doc["started_at"], &doc["ended_at"]);
    assert!(run_secs < 15.0, "the run took {run_secs}s with connect_timeout = 5s");
}

/// Case 4: A host key that differs from known_hosts is refused and no command runs.
#[test]
fn known_hosts_mismatch_refuses_the_host() {
    let ctx = Ctx::new();
    let tag = unique("hostkey");
    let good = fleet(1, &[("T", &tag)], &[]);
    let other = fleet(1, &[("T", &tag)], &["--host-key", "other"]);
    let cmd = format!("touch {}/$(echo $SSH_CONNECTION | cut -d' ' -f3)", ctx.evidence.display());
    ctx.write_job("hk", &job("T", &tag, &[&cmd], ALL_MAY_FAIL, ""));
    let (code, doc) = ctx.run_json("hk", &[]);
    assert_eq!(code, 1);
    let by_id = hosts_by_id(&doc);
    assert_eq!(by_id[&good[0].id]["status"], "ok");
    let bad = &by_id[&other[0].id];
    assert_eq!(bad["error_kind"], "host_key", "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("mismatch"), "{bad}");
    assert_eq!(bad["commands"].as_array().unwrap().len(), 0);
    assert_eq!(ctx.evidence_files(), vec![good[0].address.clone()]);
}

/// Case 4: Under tofu, the first key is pinned; after the host's key changes, it is refused.
#[test]
fn tofu_pins_the_first_key_and_refuses_a_change() {
    let ctx = Ctx::new();
    let tag = unique("tofu");
    let h = fleet(1, &[("T", &tag)], &["--host-key", "other"]);
    let marker = ctx.evidence.join("ran");
    ctx.write_job(
        "tofu",
        &job("T", &tag, &[&format!("touch {}", marker.display())], "", "[ssh]\nhost_keys = \"tofu\""),
    );
    let (code, doc) = ctx.run_json("tofu", &[]);
    assert_eq!(code, 0, "first use pins the key: {doc}");
    assert!(marker.exists());
    let (code, _) = ctx.run_json("tofu", &[]);
    assert_eq!(code, 0, "the same key is accepted again");
    std::fs::remove_file(&marker).unwrap();

    let out =
        std::process::Command::new(root().join("scripts/sandbox")).args(["rekey", &h[0].address]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, doc) = ctx.run_json("tofu", &[]);
    assert_eq!(code, 1);
    let r = &hosts_by_id(&doc)[&h[0].id];
    assert_eq!(r["error_kind"], "host_key", "{r}");
    assert!(r["error"].as_str().unwrap().contains("changed"), "{r}");
    assert!(!marker.exists(), "a command ran on a host whose key changed");
}

/// Case 5: The per-host timeout ends a long command, and the remote process does not outlive the run.
#[test]
fn per_host_timeout_kills_the_remote_command() {
    let ctx = Ctx::new();
    let tag = unique("timeout");
    let h = fleet(1, &[("T", &tag)], &[]);
    let sleeper = format!("sleep {}", 6000 + std::process::id() % 1000);
    ctx.write_job("slow", &job("T", &tag, &[&sleeper], "timeout = \"2s\"", ""));
    let (code, doc) = ctx.run_json("slow", &[]);
    assert_eq!(code, 1);
    let r = &hosts_by_id(&doc)[&h[0].id];
    assert_eq!(r["error_kind"], "timeout", "{r}");
    let secs = secs_between(&doc["started_at"], &doc["ended_at"]);
    assert!(secs < 6.0, "the run took {secs}s with a 2s timeout");
    let left = wait_for_remote(&sleeper, 0, 50);
    assert_eq!(left, 0, "`{sleeper}` still runs on the host after the timeout");
}

/// Ctrl-C or SIGTERM: remote commands are killed and the run is recorded as cancelled.
#[test]
fn sigterm_kills_remote_commands_and_records_the_run_as_cancelled() {
    let ctx = Ctx::new();
    let tag = unique("cancel");
    fleet(2, &[("T", &tag)], &[]);
    let sleeper = format!("sleep {}", 7000 + std::process::id() % 1000);
    ctx.write_job("cancel", &job("T", &tag, &[&sleeper], "timeout = \"10m\"", ""));
    let child =
        ctx.opsd().args(["run", "cancel", "--output", "json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let started = wait_for_remote(&sleeper, 2, 200);
    assert_eq!(started, 2, "the remote commands never started");
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], "cancelled", "{doc}");
    assert!(doc["hosts"].as_array().unwrap().iter().all(|h| h["status"] == "cancelled"), "{doc}");
    let left = wait_for_remote(&sleeper, 0, 50);
    assert_eq!(left, 0, "`{sleeper}` still runs on the hosts after opsd was stopped");
    let h = ctx.json(&["history", "cancel"]);
    assert_eq!(h["runs"][0]["outcome"], "cancelled");
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Case 6: A command printing 50 MB keeps output_limit, counts the rest, and opsd's memory stays flat.
#[test]
fn output_cap_keeps_the_limit_and_counts_the_rest() {
    let ctx = Ctx::new();
    let tag = unique("output");
    let h = fleet(1, &[("T", &tag)], &[]);
    const TOTAL: u64 = 50_000_000;
    let cmd = format!("head -c {TOTAL} /dev/zero | tr '\\0' x; echo tail >&2");
    ctx.write_job("loud", &job("T", &tag, &[&cmd], "output_limit = \"64KiB\"", ""));
    ctx.write_job("quiet", &job("T", &tag, &["echo tail"], "output_limit = \"64KiB\"", ""));
    // opsd's peak RSS while `job` runs, and its output.
    let peak_of = |job: &str| {
        let child = ctx
            .opsd()
            .args(["run", job, "--output", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let watcher = std::thread::spawn(move || {
            let mut peak = 0;
            while let Some(kib) = peak_rss_kib(pid) {
                peak = peak.max(kib);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        });
        let out = child.wait_with_output().unwrap();
        (watcher.join().unwrap(), out)
    };
    // The same binary with a line of output: its own footprint, under the same load as the test.
    let (baseline_kib, _) = peak_of("quiet");
    let (peak_kib, out) = peak_of("loud");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &hosts_by_id(&doc)[&h[0].id];
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    let kept = r["commands"][0]["stdout"].as_str().unwrap();
    assert_eq!(kept.len(), 65536);
    assert!(kept.bytes().all(|b| b == b'x'));
    assert_eq!(r["stdout_dropped"], TOTAL - 65536);
    assert_eq!(r["commands"][0]["stderr"], "tail\n");
    assert!(peak_kib > 0 && baseline_kib > 0, "could not observe opsd's memory");
    eprintln!("opsd's peak RSS: {peak_kib} KiB streaming 50 MB, {baseline_kib} KiB for one line");
    // Buffering the stream would add 50 MB; a capped stream stays near the binary's own footprint
    // (the SSH window and the channel's buffers: a few MiB).
    assert!(
        peak_kib < baseline_kib + 16 * 1024,
        "opsd's peak RSS was {peak_kib} KiB while 50 MB streamed through it, {baseline_kib} KiB for one line"
    );
}

/// Start and end times, in nanoseconds, that each remote command wrote.
fn intervals(ctx: &Ctx) -> Vec<(u128, u128)> {
    ctx.evidence_files()
        .iter()
        .map(|f| {
            let t = std::fs::read_to_string(ctx.evidence.join(f)).unwrap();
            let v: Vec<u128> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0], v[1])
        })
        .collect()
}

fn max_overlap(iv: &[(u128, u128)]) -> usize {
    let mut edges: Vec<(u128, i32)> = iv.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    edges.sort_by_key(|(t, d)| (*t, *d));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// Case 7: max_concurrency is never exceeded, measured on the host side.
#[test]
fn max_concurrency_is_never_exceeded() {
    let ctx = Ctx::new();
    let tag = unique("conc");
    fleet(6, &[("T", &tag)], &[]);
    let cmd = format!(
        "f={}/$(echo $SSH_CONNECTION | cut -d' ' -f3); date +%s%N > $f; sleep 1.5; date +%s%N >> $f",
        ctx.evidence.display()
    );
    ctx.write_job("conc", &job("T", &tag, &[&cmd], "max_concurrency = 2", ""));
    let (code, doc) = ctx.run_json("conc", &[]);
    assert_eq!(code, 0, "{doc}");
    let iv = intervals(&ctx);
    assert_eq!(iv.len(), 6);
    assert_eq!(max_overlap(&iv), 2, "hosts at once: {iv:?}");

    // The command-line override wins over the job file.
    for f in ctx.evidence_files() {
        std::fs::remove_file(ctx.evidence.join(f)).unwrap();
    }
    let (code, _) = ctx.run_json("conc", &["--max-concurrency", "1"]);
    assert_eq!(code, 0);
    assert_eq!(max_overlap(&intervals(&ctx)), 1);
}

/// Case 8: Once failures exceed max_errors, no new host starts; the rest are recorded as skipped.
#[test]
fn max_errors_stops_starting_new_hosts() {
    let ctx = Ctx::new();
    let tag = unique("budget");
    fleet(8, &[("T", &tag)], &[]);
    let cmd = format!("touch {}/$(echo $SSH_CONNECTION | cut -d' ' -f3); exit 1", ctx.evidence.display());
    ctx.write_job("budget", &job("T", &tag, &[&cmd], "max_concurrency = 1\nmax_errors = 2", ""));
    let (code, doc) = ctx.run_json("budget", &[]);
    assert_eq!(code, 1);
    assert_eq!(doc["counts"]["failed"], 3, "{doc}");
    assert_eq!(doc["counts"]["skipped"], 5, "{doc}");
    assert_eq!(ctx.evidence_files().len(), 3, "hosts that started");
    let skipped: Vec<_> = doc["hosts"].as_array().unwrap().iter().filter(|h| h["status"] == "skipped").collect();
    assert!(skipped.iter().all(|h| h["error"].as_str().unwrap().contains("max_errors")));
}

/// Case 9: A malformed job file is named with line and field by `validate`, and does not stop `run` of another.
#[test]
fn malformed_job_is_located_and_does_not_stop_others() {
    let ctx = Ctx::new();
    let tag = unique("good");
    fleet(1, &[("T", &tag)], &[]);
    ctx.write_job("good", &job("T", &tag, &["true"], "", ""));
    let bad = ctx.write_job("bad", "[target]\ntags = { T = \"x\" }\n[run]\ncommands = [\"true\"]\ntimeot = \"5m\"\n");
    ctx.write_job(
        "worse",
        "schedule = \"rate(1 minutes)\"\n[target]\ntags = { T = \"x\" }\n[run]\ncommands = [\"true\"]\n",
    );

    let out = ctx.run(&["validate"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:5:1: run.timeot: unknown key", bad.display())), "{err}");
    assert!(err.contains("worse.toml:1:12: schedule:"), "{err}");
    let out = ctx.run(&["validate", &path_str(&ctx.dir.path().join("jobs/good.toml"))]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let (code, doc) = ctx.run_json("good", &[]);
    assert_eq!(code, 0, "{doc}");
    let out = ctx.run(&["run", "bad"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run.timeot"));

    let out = ctx.run(&["jobs"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("good") && listing.contains("INVALID"), "{listing}");
}

/// Case 10: --dry-run, history, JSON output and the exit codes 0, 1, 3, 64, 69 and 70.
#[test]
fn dry_run_history_json_and_exit_codes() {
    let ctx = Ctx::new();
    let tag = unique("codes");
    let hosts = fleet(2, &[("T", &tag)], &[]);
    let marker = ctx.evidence.join("ran");
    ctx.write_job("ok", &job("T", &tag, &[&format!("touch {}", marker.display())], "", ""));
    ctx.write_job("fails", &job("T", &tag, &["false"], "", ""));
    ctx.write_job("nomatch", &job("T", &unique("nothing"), &["true"], "", ""));

    // Dry run: lists the hosts, connects to none.
    let out = ctx.run(&["run", "ok", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(hosts.iter().all(|h| text.contains(&h.id) && text.contains(&h.address)), "{text}");
    assert!(!marker.exists(), "--dry-run connected");
    // Each host's auth and host-key source (issue 15).
    assert_eq!(text.matches("auth: key ").count(), 2, "{text}");
    assert_eq!(text.matches("host keys: known-hosts ").count(), 2, "{text}");
    ctx.write_job("eic", &job("T", &tag, &["true"], "", "[ssh]\nauth = \"instance-connect\"\nhost_keys = \"console\""));
    let (code, doc) = ctx.run_json("eic", &["--dry-run"]);
    assert_eq!(code, 0, "{doc}");
    for h in doc["hosts"].as_array().unwrap() {
        assert_eq!((h["auth"].as_str(), h["host_keys"].as_str()), (Some("instance-connect"), Some("console")), "{h}");
    }

    let (code, doc) = ctx.run_json("ok", &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["outcome"], "succeeded");
    assert_eq!(doc["counts"]["ok"], 2);
    assert!(marker.exists());
    let (code, doc) = ctx.run_json("fails", &[]);
    assert_eq!((code, doc["outcome"].as_str()), (1, Some("failed")));
    let (code, doc) = ctx.run_json("nomatch", &[]);
    assert_eq!((code, doc["outcome"].as_str()), (3, Some("no_hosts")));
    assert_eq!(ctx.run(&["run", "nomatch", "--dry-run"]).status.code(), Some(3));
    assert_eq!(ctx.run(&["run", "no-such-job"]).status.code(), Some(64));
    assert_eq!(ctx.run(&["run"]).status.code(), Some(64), "a command-line error is EX_USAGE");

    // AWS unreachable: nothing listens on port 1 of loopback.
    let out = ctx.opsd().args(["run", "ok"]).env("AWS_ENDPOINT_URL", "http://127.0.0.1:1").output().unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));

    // History lists the runs, newest first, and filters by job.
    let h = ctx.json(&["history"]);
    let outcomes: Vec<_> =
        h["runs"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["no_hosts", "failed", "succeeded"]);
    let out = ctx.run(&["history", "fails"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fails") && !text.contains(" ok "), "{text}");
    assert_eq!(ctx.run(&["history", "--run", "999999"]).status.code(), Some(64));

    // The run history cannot be written (the state directory would be inside a file): 70, nothing run.
    std::fs::remove_file(&marker).unwrap();
    let out = ctx.opsd().args(["run", "ok"]).env("OPSD_STATE_DIR", "/dev/null/state").output().unwrap();
    assert_eq!(out.status.code(), Some(70), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("state_dir"));
    assert!(!marker.exists(), "hosts ran although the run could not be recorded");
}

/// The store takes concurrent writers: several opsd processes record at once, nothing is lost.
#[test]
fn concurrent_runs_share_the_store() {
    let ctx = Ctx::new();
    let tag = unique("wal");
    fleet(3, &[("T", &tag)], &[]);
    ctx.write_job("wal", &job("T", &tag, &["echo hi"], "", ""));
    let children: Vec<_> = (0..4)
        .map(|_| {
            ctx.opsd()
                .args(["run", "wal", "--output", "json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let h = ctx.json(&["history", "wal"]);
    let runs = h["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["outcome"] == "succeeded" && r["hosts_ok"] == 3), "{h}");
}

/// Kills the process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Case 10: AWS denying the call (moto with IAM authentication enforced, as AWS does for unknown keys) exits 69.
#[test]
fn aws_denied_exits_69() {
    let ctx = Ctx::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let moto = std::process::Command::new(format!("{}/venv/bin/python", env("OPSD_SANDBOX_DIR")))
        .args([&path_str(&root().join("scripts/moto_server.py")), "-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _moto = KillOnDrop(moto);
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(up, "the second moto server did not start");
    ctx.write_job("denied", &job("T", "x", &["true"], "", ""));
    let out = ctx
        .opsd()
        .args(["run", "denied", "--dry-run"])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("denied") && err.contains("credentials"), "{err}");
}

/// A closed stdout (`opsd run job | head -1`) neither aborts the run nor loses its record.
#[test]
fn closed_stdout_does_not_abort_a_run() {
    let ctx = Ctx::new();
    let tag = unique("pipe");
    fleet(2, &[("T", &tag)], &[]);
    ctx.write_job("pipe", &job("T", &tag, &["seq 1 2000"], "", ""));
    let mut child = ctx.opsd().args(["run", "pipe"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0), "opsd must finish the run when its reader goes away");
    let h = ctx.json(&["history", "pipe"]);
    assert_eq!(h["runs"][0]["outcome"], "succeeded");
    assert_eq!(h["runs"][0]["hosts_ok"], 2);
}

/// `--hosts-file`: the hosts listed, EC2 never asked (here AWS is unreachable), results as usual;
/// a malformed line is reported with file and line.
#[test]
fn hosts_file_skips_ec2() {
    let ctx = Ctx::new();
    let tag = unique("hostsfile");
    let h = fleet(2, &[("T", &tag)], &[]);
    ctx.write_job("hf", &job("T", "nothing-has-this-tag", &["echo from-file"], "", ""));
    let file = ctx.dir.path().join("hosts");
    std::fs::write(&file, format!("# the fleet\n{} {}\n\n{}  # no id\n", h[0].id, h[0].address, h[1].address)).unwrap();
    let out = ctx
        .opsd()
        .args(["run", "hf", "--output", "json", "--hosts-file", &path_str(&file)])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = doc["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{doc}");
    assert!(hosts.iter().all(|x| x["status"] == "ok" && x["commands"][0]["stdout"] == "from-file\n"), "{doc}");
    assert_eq!(hosts.iter().filter(|x| x["host"]["instance_id"].is_null()).count(), 1, "{doc}");
    std::fs::write(&file, format!("{}\na b c\n", h[0].address)).unwrap();
    let out = ctx.run(&["run", "hf", "--hosts-file", &path_str(&file)]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hosts:2:1"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 14, 3.5: the state directory opsd creates is private (0700) and the run history's files
/// are 0600, WAL included, whatever the umask: they hold the hosts' output and the TOFU pins.
#[test]
fn the_state_opsd_creates_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = Ctx::new();
    let tag = unique("private");
    fleet(1, &[("T", &tag)], &[]);
    ctx.write_job("p", &job("T", &tag, &["true"], "", ""));
    let state = ctx.dir.path().join("deep").join("state");
    let out = ctx.opsd().env("OPSD_STATE_DIR", &state).args(["run", "p"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    for f in ["opsd.db", "opsd.db.lock"] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    // The WAL, while a connection holds it open (opsd checkpoints and removes it at close).
    let db = rusqlite::Connection::open(state.join("opsd.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0)).unwrap();
    db.execute("CREATE TABLE IF NOT EXISTS t (x)", []).unwrap();
    if state.join("opsd.db-wal").exists() {
        assert_eq!(mode(&state.join("opsd.db-wal")), 0o600);
    }
}

/// Issue 14, 3.5: an identity file that others may read is refused, as OpenSSH refuses it, with a
/// message that says how to fix it; nothing is run.
#[test]
fn an_identity_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = Ctx::new();
    let tag = unique("exposed");
    fleet(1, &[("T", &tag)], &[]);
    let key = ctx.dir.path().join("exposed_key");
    std::fs::copy(env("OPSD_SANDBOX_SSH_KEY"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = path_str(&ctx.evidence.join("ran"));
    ctx.write_job(
        "x",
        &job("T", &tag, &[&format!("touch {file}")], "", &format!("[ssh]\nidentity_file = \"{}\"", path_str(&key))),
    );
    let out = ctx.run(&["run", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("readable by others (mode 0644)") && err.contains(&format!("chmod 600 {}", path_str(&key))),
        "{err}"
    );
    assert!(!ctx.evidence.join("ran").exists(), "a command ran");
    // Private again, it is accepted.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ctx.run(&["run", "x"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 14, 3.12: escape sequences and control characters in a host's output are shown, not
/// obeyed, in the live view and in `opsd history --run`.
#[test]
fn remote_output_cannot_drive_the_terminal() {
    let ctx = Ctx::new();
    let tag = unique("escapes");
    fleet(1, &[("T", &tag)], &[]);
    let cmd = r"printf '\033[2J\033]0;pwned\007hello\rworld\n'; printf 'err\033[31m\n' >&2";
    ctx.write_job("esc", &job("T", &tag, &[cmd], "", ""));
    let out = ctx.run(&["run", "esc"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = |bytes: &[u8]| {
        assert!(!bytes.iter().any(|b| *b == 0x1b || *b == 0x07 || *b == b'\r'), "raw control bytes: {bytes:?}");
        String::from_utf8_lossy(bytes).into_owned()
    };
    let live = shown(&out.stdout);
    assert!(live.contains(r"| \x1b[2J\x1b]0;pwned\x07hello\rworld"), "{live}");
    assert!(live.contains(r"! err\x1b[31m"), "{live}");
    let runs = ctx.json(&["history", "esc"]);
    let id = runs["runs"][0]["id"].as_i64().unwrap().to_string();
    let text = shown(&ctx.run(&["history", "--run", &id]).stdout);
    assert!(text.contains(r"| \x1b[2J\x1b]0;pwned\x07hello\rworld"), "{text}");
    // JSON keeps the bytes, escaped by JSON itself.
    let doc = ctx.json(&["history", "--run", &id]);
    assert_eq!(doc["hosts"][0]["commands"][0]["stdout"], "\u{1b}[2J\u{1b}]0;pwned\u{7}hello\rworld\n", "{doc}");
}

/// Issue 14, 3.15: the commands that only read (`history`, `jobs`, the status commands) neither
/// create, migrate nor write the store; an older store is refused with how to upgrade it.
#[test]
fn read_only_commands_leave_the_store_alone() {
    let ctx = Ctx::new();
    let tag = unique("readonly");
    fleet(1, &[("T", &tag)], &[]);
    ctx.write_job("ro", &job("T", &tag, &["true"], "", ""));
    let state = ctx.dir.path().join("ro-state");
    let opsd = |args: &[&str]| ctx.opsd().env("OPSD_STATE_DIR", &state).args(args).output().unwrap();
    // No store yet: nothing to show, nothing created.
    let out = opsd(&["history", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["runs"], serde_json::json!([]));
    assert!(opsd(&["jobs"]).status.success());
    assert!(!state.exists(), "a read-only command created the state directory");
    // A store: reading it changes no byte of it.
    assert!(opsd(&["run", "ro"]).status.success());
    let db = state.join("opsd.db");
    let before = std::fs::read(&db).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&opsd(&["history", "--output", "json"]).stdout).unwrap();
    let id = doc["runs"][0]["id"].as_i64().unwrap().to_string();
    for args in [&["history"][..], &["history", "--run", &id], &["jobs"], &["hosts", "keys"]] {
        let out = opsd(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(std::fs::read(&db).unwrap() == before, "the store changed");
    // An older schema: refused, and left as it was.
    rusqlite::Connection::open(&db).unwrap().pragma_update(None, "user_version", 1).unwrap();
    let out = opsd(&["history"]);
    assert_eq!(out.status.code(), Some(70));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("older opsd") && err.contains("run `opsd daemon` (or `opsd run`) once"), "{err}");
    let v: i32 = rusqlite::Connection::open(&db).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1);
}

/// Issue 14, 3.6: a run whose `opsd run` process died (kill -9) is recorded `interrupted` at the
/// next open of the store; a run of a live process is left running.
#[test]
fn a_run_whose_process_died_is_recorded_interrupted() {
    let ctx = Ctx::new();
    let tag = unique("dead-run");
    fleet(1, &[("T", &tag)], &[]);
    ctx.write_job("slow", &job("T", &tag, &["sleep 30"], "", ""));
    ctx.write_job("quick", &job("T", &tag, &["true"], "", ""));
    let outcome = |job: &str| ctx.json(&["history", job])["runs"][0].clone();
    let mut slow = ctx
        .opsd()
        .args(["run", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut tries = 0;
    while outcome("slow")["outcome"] != "running" {
        tries += 1;
        assert!(tries < 200, "the slow run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another run while it lives: it stays running.
    assert!(ctx.run(&["run", "quick"]).status.success());
    assert_eq!(outcome("slow")["outcome"], "running");
    slow.kill().unwrap();
    slow.wait().unwrap();
    assert!(ctx.run(&["run", "quick"]).status.success());
    let r = outcome("slow");
    assert_eq!(r["outcome"], "interrupted", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("ended without recording its end"), "{r}");
    assert!(r["ended_at"].is_string(), "{r}");
}

/// Issue 14, 3.1: nothing a timed-out command started keeps running on the host: not the command
/// under sudo (sshd cannot signal a root process), not its background child. The run says the
/// processes were ended, as read back from the process table.
#[test]
fn a_timed_out_command_leaves_nothing_running_even_under_sudo() {
    let ctx = Ctx::new();
    let tag = unique("reap");
    fleet(1, &[("T", &tag)], &[]);
    let n = std::process::id() % 1000;
    let (bg, root) = (format!("sleep 9{n:03}1"), format!("sleep 9{n:03}2"));
    ctx.write_job("hang", &job("T", &tag, &[&format!("{bg} & sudo -n {root}")], "timeout = \"2s\"", ""));
    let (code, doc) = ctx.run_json("hang", &[]);
    assert_ne!(code, 0);
    let host = &doc["hosts"][0];
    assert_eq!(host["error_kind"], "timeout", "{doc}");
    assert!(host["error"].as_str().unwrap().contains("the command and its processes were ended"), "{doc}");
    assert_eq!(wait_for_remote(&bg, 0, 30), 0, "the background child outlived the run");
    assert_eq!(wait_for_remote(&root, 0, 30), 0, "the command under sudo outlived the run");
    assert_eq!(wait_for_remote(&format!("sudo -n {root}"), 0, 30), 0, "sudo outlived the run");
}

/// Every file under `dir` whose text holds a private key.
fn private_key_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(private_key_files(&p));
        } else if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains("PRIVATE KEY")) {
            found.push(p);
        }
    }
    found
}

/// The keys EC2 Instance Connect holds (pushed less than 60 s ago) for the instance at `address`.
fn pushed_keys(address: &str) -> Vec<String> {
    let (status, body) =
        moto_ext("GET", &format!("/moto-ext/instance-connect/keys?address={address}&user=opsd-sandbox"), "");
    assert_eq!(status, 200, "{body}");
    body.lines().map(str::to_string).collect()
}

/// Issue 15, test 1: `auth = "instance-connect"` with no identity file runs on 20 hosts. Each host
/// got the run's key through SendSSHPublicKey (the sandbox sshd authorizes nothing else for it), and
/// no private key was written to the state directory or to the temporary directory.
#[test]
fn instance_connect_runs_with_no_key_at_rest() {
    // No identity_file anywhere: the config's [ssh] has none, so auth = "key" could not even load.
    let ctx = Ctx::with_config_extra("auth = \"instance-connect\"\n");
    let config = std::fs::read_to_string(ctx.config()).unwrap();
    std::fs::write(
        ctx.config(),
        config.lines().filter(|l| !l.starts_with("identity_file")).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let tag = unique("eic");
    let hosts = fleet(20, &[("T", &tag)], &[]);
    let cmd = format!("touch {}/$(echo $SSH_CONNECTION | cut -d' ' -f3)", ctx.evidence.display());
    ctx.write_job("eic", &job("T", &tag, &[&cmd], "max_concurrency = 5", ""));
    let tmp = tempfile::tempdir().unwrap();
    let out = ctx.opsd().env("TMPDIR", tmp.path()).args(["run", "eic", "--output", "json"]).output().unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let by_id = hosts_by_id(&doc);
    let mut addrs: Vec<String> = hosts.iter().map(|h| h.address.clone()).collect();
    addrs.sort();
    assert_eq!(ctx.evidence_files(), addrs);
    let sandbox_client = std::fs::read_to_string(root().join("target/sandbox/keys/client_ed25519.pub")).unwrap();
    let mut run_keys = BTreeSet::new();
    for h in &hosts {
        assert_eq!(by_id[&h.id]["status"], "ok", "{}", by_id[&h.id]);
        let keys = pushed_keys(&h.address);
        assert_eq!(keys.len(), 1, "{}: {keys:?}", h.id);
        assert!(!sandbox_client.contains(keys[0].split_whitespace().nth(1).unwrap()));
        run_keys.insert(keys[0].clone());
    }
    assert_eq!(run_keys.len(), 1, "one key per run, pushed to every host: {run_keys:?}");
    assert!(run_keys.iter().next().unwrap().starts_with("ssh-ed25519 "));
    assert_eq!(private_key_files(&ctx.dir.path().join("state")), Vec::<std::path::PathBuf>::new());
    assert_eq!(private_key_files(tmp.path()), Vec::<std::path::PathBuf>::new());
    // A second run makes a key of its own.
    let (code, _) = ctx.run_json("eic", &[]);
    assert_eq!(code, 0);
    let again = pushed_keys(&hosts[0].address);
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().any(|k| !run_keys.contains(k)), "the second run reused the first run's key");
}

/// Issue 15, tests 2 and 5: a fan-out of 200 hosts at concurrency 20 pushes each key just before
/// connecting, so every host is reached within its 60 s window; an instance for which IAM denies
/// ec2-instance-connect:SendSSHPublicKey fails alone, with an error naming the permission.
#[test]
fn instance_connect_fans_out_and_an_iam_denial_fails_one_host() {
    let ctx = Ctx::with_config_extra("auth = \"instance-connect\"\n");
    let tag = unique("eic200");
    let hosts = fleet(199, &[("T", &tag)], &[]);
    let denied = fleet(1, &[("T", &tag), ("moto:instance-connect-error", "AccessDenied")], &[]);
    ctx.write_job("fan", &job("T", &tag, &["true"], "max_concurrency = 20\nmax_errors = 1", ""));
    let (code, doc) = ctx.run_json("fan", &[]);
    assert_eq!(code, 1, "{doc}");
    let by_id = hosts_by_id(&doc);
    assert_eq!(by_id.len(), 200);
    for h in &hosts {
        assert_eq!(by_id[&h.id]["status"], "ok", "{}", by_id[&h.id]);
    }
    let d = &by_id[&denied[0].id];
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["error_kind"], "auth", "{d}");
    let error = d["error"].as_str().unwrap();
    assert!(error.contains("ec2-instance-connect:SendSSHPublicKey") && error.contains(&denied[0].id), "{d}");
    assert_eq!(d["commands"].as_array().map(Vec::len), Some(0), "{d}");
}

/// Issue 15, test 3: `host_keys = "console"`. The key a host presents must be one its console
/// output lists (cloud-init's block, read with GetConsoleOutput): a matching host runs; a host that
/// serves another key than its console lists is refused before any command; an instance whose
/// console has no block is refused with a message that says what to use instead.
#[test]
fn console_host_keys_are_the_only_ones_trusted() {
    let ctx = Ctx::new();
    let tag = unique("console");
    let good = fleet(1, &[("T", &tag)], &[]);
    let other = fleet(1, &[("T", &tag)], &["--host-key", "other"]);
    let blank = fleet(1, &[("T", &tag), ("moto:console-host-keys", "none")], &[]);
    let cmd = format!("touch {}/$(echo $SSH_CONNECTION | cut -d' ' -f3)", ctx.evidence.display());
    ctx.write_job("console", &job("T", &tag, &[&cmd], ALL_MAY_FAIL, "[ssh]\nhost_keys = \"console\""));
    // known_hosts lists every sandbox host: the console, not known_hosts, is what is checked.
    let (code, doc) = ctx.run_json("console", &[]);
    assert_eq!(code, 1, "{doc}");
    let by_id = hosts_by_id(&doc);
    assert_eq!(by_id[&good[0].id]["status"], "ok", "{}", by_id[&good[0].id]);
    let o = &by_id[&other[0].id];
    assert_eq!(o["error_kind"], "host_key", "{o}");
    assert!(o["error"].as_str().unwrap().contains("its console output lists"), "{o}");
    let b = &by_id[&blank[0].id];
    assert_eq!(b["error_kind"], "host_key", "{b}");
    let why = b["error"].as_str().unwrap();
    assert!(why.contains("no SSH host key block") && why.contains("host_keys = \"known-hosts\""), "{b}");
    assert_eq!(ctx.evidence_files(), vec![good[0].address.clone()], "a command ran on a refused host");
    // The console's keys are kept per instance: `opsd hosts keys` lists them with their source.
    let keys = ctx.json(&["hosts", "keys", &good[0].id, &blank[0].id]);
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["source"], "console");
    assert_eq!(keys[0]["instance_id"], good[0].id.as_str());
    let none = ctx.run(&["hosts", "keys", &blank[0].id]);
    assert_eq!(none.status.code(), Some(3), "{}", String::from_utf8_lossy(&none.stdout));
}

/// `opsd --version` carries the version and the git commit it was built from (issue 16).
#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsd")).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(text.trim(), format!("opsd {} ({head})", env!("CARGO_PKG_VERSION")));
}

/// `opsd jobs --at … --next N JOB` (issue 16): the firings after any instant, in the job's zone
/// and UTC, with what each DST change did; no waiting for real time.
#[test]
fn jobs_at_lists_firings_after_any_instant_with_the_dst_policy() {
    let ctx = Ctx::with_config_extra("");
    let target = "[target]\ntags = { Role = \"db\" }\n[run]\ncommands = [\"true\"]\n";
    ctx.write_job("backup", &format!("schedule = \"cron(30 2 * * ? *)\"\ntimezone = \"America/New_York\"\n{target}"));
    ctx.write_job(
        "sweep",
        &format!("schedule = \"cron(0/30 1-2 ? * SUN *)\"\ntimezone = \"America/New_York\"\n{target}"),
    );
    ctx.write_job("late-shift", &format!("schedule = \"cron(0 22-1 ? * FRI-MON *)\"\n{target}"));
    let lines = |args: &[&str]| {
        let out = ctx.run(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("  next"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    // Spring forward in New York, 2026-03-08: 02:30 does not exist; the job fires at 03:00 EDT.
    let got = lines(&["jobs", "--at", "2026-03-06T12:00:00Z", "--next", "3", "backup"]);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].starts_with("  next 2026-03-07 02:30:00 EST  (2026-03-07 07:30:00 UTC)"), "{got:?}");
    assert!(
        got[1].starts_with("  next 2026-03-08 03:00:00 EDT  (2026-03-08 07:00:00 UTC)  DST: clocks went forward 1h00"),
        "{got:?}"
    );
    assert!(got[1].ends_with("its wall time did not exist that day: fired at the end of the gap"), "{got:?}");
    assert_eq!(got[2], "  next 2026-03-09 02:30:00 EDT  (2026-03-09 06:30:00 UTC)");
    // Fall back, 2026-11-01: a periodic schedule fires at both 01:00s and both 01:30s.
    let got = lines(&["jobs", "--at", "2026-11-01T04:00:00Z", "--next", "6", "sweep"]);
    let utc: Vec<&str> = got.iter().map(|l| &l[l.find('(').unwrap() + 1..l.find(" UTC)").unwrap()]).collect();
    assert_eq!(
        utc,
        [
            "2026-11-01 05:00:00",
            "2026-11-01 05:30:00",
            "2026-11-01 06:00:00",
            "2026-11-01 06:30:00",
            "2026-11-01 07:00:00",
            "2026-11-01 07:30:00"
        ]
    );
    assert!(
        got[2].contains("DST: clocks went back 1h00") && got[2].contains("a periodic schedule fires at both"),
        "{got:?}"
    );
    // An hour range across midnight and a weekday range across Sunday, as EventBridge reads them:
    // Friday 2026-03-06 22:00 to Tuesday 01:00, every hour whose day is Friday to Monday.
    let got = lines(&["jobs", "--at", "2026-03-06T21:00:00Z", "--next", "13", "late-shift"]);
    let utc: Vec<&str> = got.iter().map(|l| &l[7..23]).collect();
    assert_eq!(
        utc,
        [
            "2026-03-06 22:00",
            "2026-03-06 23:00",
            "2026-03-07 00:00",
            "2026-03-07 01:00",
            "2026-03-07 22:00",
            "2026-03-07 23:00",
            "2026-03-08 00:00",
            "2026-03-08 01:00",
            "2026-03-08 22:00",
            "2026-03-08 23:00",
            "2026-03-09 00:00",
            "2026-03-09 01:00",
            "2026-03-09 22:00"
        ]
    );
    // The next one after Monday 23:00 is Tuesday 00:00 (Tuesday is not in FRI-MON): Friday.
    let got = lines(&["jobs", "--at", "2026-03-09T23:00:00Z", "--next", "2", "late-shift"]);
    assert!(got[0].starts_with("  next 2026-03-13 00:00:00 UTC"), "{got:?}");
    let out = ctx.run(&["jobs", "no-such-job"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named \"no-such-job\""));
}

/// `[run] script` (issue 16): the seed's HelloWorld.sh case without any S3 bucket: a file beside
/// the job, shipped over each host's SSH channel, run after the commands with its args, from a
/// private file removed afterwards; the run record keeps its SHA-256.
#[test]
fn a_script_beside_the_job_runs_on_every_host_after_the_commands() {
    use sha2::Digest;
    let ctx = Ctx::new();
    let tag = unique("script");
    let hosts = fleet(3, &[("T", &tag)], &[]);
    let scripts = ctx.dir.path().join("jobs/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    // The interpreter comes from the #! line; 200 KiB of comment make the transfer span many SSH
    // window adjustments.
    let mut text = String::from(
        "#!/bin/bash\nset -eu\necho \"Hello World from $(hostname), args: $#: $1|$2\"\necho \"file $0\"\nls -ld \"$(dirname \"$0\")\" | cut -c1-10\n[[ -n \"${BASH_VERSION}\" ]] && echo bash\n",
    );
    text.push_str(&"# padding padding padding padding padding padding padding padding padding pad\n".repeat(2600));
    text.push_str("echo done\n");
    std::fs::write(scripts.join("HelloWorld.sh"), &text).unwrap();
    let sha: String = sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    ctx.write_job(
        "hello",
        &format!("[target]\ntags = {{ T = \"{tag}\" }}\n[run]\ncommands = [\"echo first\"]\nscript = \"scripts/HelloWorld.sh\"\nargs = [\"it's\", \"two words\"]\n"),
    );
    let dry = ctx.run(&["run", "hello", "--dry-run"]);
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.contains("would run: echo first, then the script") && dry.contains(r"'it'\''s' 'two words'"), "{dry}");
    let (code, doc) = ctx.run_json("hello", &[]);
    assert_eq!(code, 0, "{doc}");
    let by_id = hosts_by_id(&doc);
    for h in &hosts {
        let r = &by_id[&h.id];
        let cmds = r["commands"].as_array().unwrap();
        assert_eq!(cmds.len(), 2, "{r}");
        assert_eq!(cmds[0]["stdout"], "first\n");
        assert_eq!(cmds[1]["command"], r"script HelloWorld.sh 'it'\''s' 'two words'");
        let out = cmds[1]["stdout"].as_str().unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("Hello World from ") && lines[0].ends_with("args: 2: it's|two words"), "{out}");
        assert_eq!(lines[2..], ["drwx------", "bash", "done"], "{out}");
        // The private file is gone once the command has ended.
        let file = lines[1].strip_prefix("file ").unwrap();
        assert!(!std::path::Path::new(file).exists(), "{file} was left on the host");
    }
    // The run's document names the script's bytes as the history does.
    assert_eq!(doc["script_sha256"], sha.as_str(), "{doc}");
    let id = doc["run_id"].as_i64().unwrap().to_string();
    let rec = ctx.json(&["history", "--run", &id]);
    assert_eq!(rec["run"]["script_sha256"], sha.as_str(), "{}", rec["run"]);
    let text = ctx.run(&["history", "--run", &id]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("script sha256 {sha}")));

    // A script alone (no commands) that fails, and one cut by the timeout: its file is removed too.
    std::fs::write(scripts.join("fail.sh"), "echo \"file $0\"\nexit 4\n").unwrap();
    ctx.write_job(
        "fail",
        &format!("[target]\ntags = {{ T = \"{tag}\" }}\n[run]\nscript = \"scripts/fail.sh\"\n{ALL_MAY_FAIL}\n"),
    );
    let (code, doc) = ctx.run_json("fail", &[]);
    assert_eq!(code, 1, "{doc}");
    let r = &hosts_by_id(&doc)[&hosts[0].id];
    assert_eq!((r["error_kind"].as_str(), r["exit_status"].as_i64()), (Some("command_failed"), Some(4)), "{r}");
    assert!(r["error"].as_str().unwrap().contains("\"script fail.sh\" exited with status 4"), "{r}");
    let sleeper = format!("sleep {}", 7000 + std::process::id() % 1000);
    std::fs::write(scripts.join("slow.sh"), format!("echo \"file $0\"\n{sleeper}\n")).unwrap();
    ctx.write_job(
        "slow",
        &format!("[target]\ntags = {{ T = \"{tag}\" }}\n[run]\nscript = \"scripts/slow.sh\"\ntimeout = \"2s\"\n{ALL_MAY_FAIL}\n"),
    );
    let (_, doc) = ctx.run_json("slow", &[]);
    for h in &hosts {
        let r = &hosts_by_id(&doc)[&h.id];
        assert_eq!(r["error_kind"], "timeout", "{r}");
        let out = r["commands"][0]["stdout"].as_str().unwrap();
        let file = out.trim().strip_prefix("file ").unwrap_or_else(|| panic!("{r}"));
        assert!(!std::path::Path::new(file).exists(), "{file} was left after the timeout");
    }
    assert_eq!(wait_for_remote(&sleeper, 0, 50), 0, "`{sleeper}` still runs after the timeout");
}

/// `[run] script` bad input: a missing file, one over the size limit and args without a script are
/// validation errors at the file's line, and `opsd run` runs nothing.
#[test]
fn a_missing_or_oversized_script_is_a_validation_error_at_its_line() {
    let ctx = Ctx::new();
    let head = "[target]\ntags = { T = \"none\" }\n[run]\n";
    let missing = ctx.write_job("missing", &format!("{head}commands = [\"true\"]\nscript = \"scripts/nope.sh\"\n"));
    let out = ctx.run(&["validate", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5:1: run.script: cannot read the script", missing.display()))
            && err.contains("relative to the job file"),
        "{err}"
    );
    std::fs::create_dir_all(ctx.dir.path().join("jobs/scripts")).unwrap();
    std::fs::write(ctx.dir.path().join("jobs/scripts/big.sh"), vec![b'#'; 256 * 1024 + 1]).unwrap();
    let big = ctx.write_job("big", &format!("{head}script = \"scripts/big.sh\"\n"));
    let out = ctx.run(&["validate", big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4:1: run.script: the script") && err.contains("more than the limit of 262144"), "{err}");
    let args = ctx.write_job("args", &format!("{head}commands = [\"true\"]\nargs = [\"x\"]\n"));
    let out = ctx.run(&["validate", args.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":5:1: run.args: args are the script's arguments"), "{err}");
    let nothing = ctx.write_job("nothing", head);
    let out = ctx.run(&["validate", nothing.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to run"), "{out:?}");
    let out = ctx.run(&["run", "missing"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}
