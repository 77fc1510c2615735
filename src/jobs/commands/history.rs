//! `opsd history`: the recorded runs, newest first; with `--run ID`, one run with every host's
//! result and kept output. In a cluster the list is the whole cluster's, from the firings' claims in
//! the table (each names the replica that ran it and the run's id in that replica's own store, where
//! its hosts and output stay); `--local` and `--run` read this replica's own store.

use super::HistoryArgs;
use crate::cluster::table::Table;
use crate::exit::Exit;
use crate::jobs::claims;
use crate::jobs::history::RunHistory;
use crate::jobs::report;
use crate::outln;
use crate::output::OutputFormat;

pub async fn history(args: HistoryArgs, runs: RunHistory) -> Exit {
    if let Some(id) = args.run {
        return one_run(&runs, id, args.output).await;
    }
    let runs = match runs.runs(args.job.clone(), args.limit).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::json!({ "runs": runs })),
        OutputFormat::Text => {
            outln!(
                "{:>6} {:<24} {:<8} {:<26} {:<10} {:>5} {:>5} {:>6} {:>7}",
                "RUN",
                "JOB",
                "TRIGGER",
                "STARTED",
                "OUTCOME",
                "HOSTS",
                "OK",
                "FAILED",
                "SKIPPED"
            );
            for r in runs {
                outln!(
                    "{:>6} {:<24} {:<8} {:<26} {:<10} {:>5} {:>5} {:>6} {:>7}",
                    r.id,
                    r.job,
                    r.trigger.as_str(),
                    r.started_at,
                    r.outcome.as_str(),
                    r.hosts_total,
                    r.hosts_ok,
                    r.hosts_failed,
                    r.hosts_skipped
                );
            }
        }
    }
    Exit::Ok
}

async fn one_run(runs: &RunHistory, id: i64, output: OutputFormat) -> Exit {
    let (run, hosts) = match runs.run(id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!("opsd: run {id} is not in the history; `opsd history` lists the runs");
            return Exit::Usage;
        }
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    match output {
        OutputFormat::Json => outln!("{}", serde_json::json!({ "run": run, "hosts": hosts })),
        OutputFormat::Text => {
            outln!(
                "run {} of {} ({}): {} at {}, ended {}; {} hosts, {} ok, {} failed, {} skipped",
                run.id,
                run.job,
                run.trigger,
                run.outcome,
                run.started_at,
                run.ended_at.as_deref().unwrap_or("-"),
                run.hosts_total,
                run.hosts_ok,
                run.hosts_failed,
                run.hosts_skipped
            );
            if let Some(sha) = &run.script_sha256 {
                outln!("script sha256 {sha}");
            }
            if let Some(reason) = &run.reason {
                outln!("reason: {reason}");
            }
            for h in &hosts {
                outln!(
                    "\n{} {} {}",
                    h.host.instance_id.as_deref().unwrap_or("-"),
                    h.host.address.as_deref().unwrap_or("-"),
                    report::host_line(h)
                );
                for c in &h.commands {
                    let status =
                        c.exit_status.map(|s| s.to_string()).or(c.exit_signal.clone()).unwrap_or_else(|| "-".into());
                    outln!("  $ {}   (exit {status})", c.command);
                    for line in String::from_utf8_lossy(&c.stdout).lines() {
                        outln!("  | {}", crate::output::visible(line));
                    }
                    for line in String::from_utf8_lossy(&c.stderr).lines() {
                        outln!("  ! {}", crate::output::visible(line));
                    }
                }
            }
        }
    }
    Exit::Ok
}

/// `opsd history` with `[cluster]`: every replica's firings of `args.job` (or of every job file in
/// `jobs_dir`), newest first, as the cluster table records them.
pub async fn cluster_history(args: HistoryArgs, jobs_dir: &std::path::Path, table: &Table) -> Exit {
    let names: Vec<String> = match &args.job {
        Some(j) => vec![j.clone()],
        None => crate::jobs::spec::files_in(jobs_dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect(),
    };
    let mut firings = Vec::new();
    for name in &names {
        match claims::recent(table, name, args.limit).await {
            Ok(f) => firings.extend(f),
            Err(e) => {
                eprintln!("opsd: the firings of {name}: {e}");
                return Exit::Unavailable;
            }
        }
    }
    firings.sort_by(|a, b| b.scheduled_for.cmp(&a.scheduled_for));
    firings.truncate(args.limit);
    let dash = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::json!({ "table": table.name(), "firings": firings })),
        OutputFormat::Text => {
            outln!(
                "{:<26} {:<24} {:<16} {:>6} {:<8} {:<11} {:>5} {:>5} {:>6} {:>7}",
                "SCHEDULED",
                "JOB",
                "REPLICA",
                "RUN",
                "TRIGGER",
                "OUTCOME",
                "HOSTS",
                "OK",
                "FAILED",
                "SKIPPED"
            );
            for f in &firings {
                outln!(
                    "{:<26} {:<24} {:<16} {:>6} {:<8} {:<11} {:>5} {:>5} {:>6} {:>7}",
                    f.scheduled_for,
                    f.job,
                    f.replica,
                    f.run_id.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    f.trigger,
                    f.state,
                    dash(f.hosts),
                    dash(f.hosts_ok),
                    dash(f.hosts_failed),
                    dash(f.hosts_skipped)
                );
            }
            outln!(
                "\na run's hosts and output stay on the replica that ran it: `opsd history --run RUN` there (`--local` lists one replica's own runs)"
            );
        }
    }
    Exit::Ok
}
