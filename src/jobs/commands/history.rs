//! `opsd history`: the recorded runs, newest first; with `--run ID`, one run with every host's
//! result and kept output.

use super::HistoryArgs;
use crate::exit::Exit;
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
                        outln!("  | {line}");
                    }
                    for line in String::from_utf8_lossy(&c.stderr).lines() {
                        outln!("  ! {line}");
                    }
                }
            }
        }
    }
    Exit::Ok
}
