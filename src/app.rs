//! The commands, assembled from the parts: each returns the [`Exit`] the process ends with, and
//! prints what the user needs (diagnostics to stderr, results to stdout).

use crate::cli::{Cli, Command, HistoryArgs, OutputFormat, RunArgs};
use crate::config::Config;
use crate::diag::Diagnostic;
use crate::exit::Exit;
use crate::fleet::{self, Host};
use crate::job::{self, units::Limit, Job};
use crate::outcome::{HostResult, HostStatus};
use crate::report::{self, Counts, Live, RunDocument};
use crate::runner::{self, Event, Plan};
use crate::ssh::Connector;
use crate::store::{RunEnd, Store};
use crate::{out, outln};
use chrono::Utc;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events buffered between the runner and the live view: enough to absorb bursts, small enough that
/// a slow terminal slows the run instead of growing memory.
const EVENT_BUFFER: usize = 256;

pub async fn main(cli: Cli, cancel: CancellationToken) -> Exit {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(diags) => {
            print_diags(&diags);
            return Exit::Usage;
        }
    };
    match cli.command {
        Command::Run(args) => run(&config, args, cancel).await,
        Command::Validate { paths } => validate(&config, &paths),
        Command::Jobs => jobs(&config),
        Command::History(args) => history(&config, args).await,
    }
}

/// SIGINT or SIGTERM cancels the token: running commands are killed and recorded as cancelled.
pub async fn cancel_on_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will end opsd without recording the run");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::warn!(
        "stopping: killing running commands and recording the run as cancelled (signal again to quit at once)"
    );
    cancel.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("opsd: second signal: quitting without waiting for cleanup");
    std::process::exit(130);
}

fn print_diags(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

fn validate(config: &Config, paths: &[PathBuf]) -> Exit {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    let targets = if paths.is_empty() { vec![config.jobs_dir.clone()] } else { paths.to_vec() };
    for p in targets {
        if p.is_dir() {
            match job::files_in(&p) {
                Ok(f) => files.extend(f),
                Err(d) => diags.push(d),
            }
        } else {
            files.push(p);
        }
    }
    let mut bad = 0;
    for f in &files {
        if let Err(d) = job::load(f, config) {
            bad += 1;
            diags.extend(d);
        }
    }
    print_diags(&diags);
    let config_name =
        config.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
    outln!("config {config_name}: ok; {} job files checked, {bad} with errors", files.len());
    if diags.is_empty() {
        Exit::Ok
    } else {
        Exit::Usage
    }
}

fn jobs(config: &Config) -> Exit {
    let files = match job::files_in(&config.jobs_dir) {
        Ok(f) => f,
        Err(d) => {
            print_diags(&[d]);
            return Exit::Usage;
        }
    };
    outln!("{:<24} {:<24} {:<40} DESCRIPTION", "JOB", "SCHEDULE", "TARGET");
    for f in files {
        match job::load(&f, config) {
            Ok(j) => {
                let tags: Vec<String> = j.target.tags.0.iter().map(|(k, v)| format!("{k}={}", v.join("|"))).collect();
                let target = format!(
                    "{} [{}]",
                    tags.join(","),
                    j.target.states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                );
                let schedule = j.schedule.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "(by hand)".into());
                outln!("{:<24} {:<24} {:<40} {}", j.name, schedule, target, j.description);
            }
            Err(d) => {
                let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                outln!("{name:<24} INVALID: `opsd validate {}` shows why", f.display());
                print_diags(&d);
            }
        }
    }
    Exit::Ok
}

async fn run(config: &Config, args: RunArgs, cancel: CancellationToken) -> Exit {
    let mut job = match job::find(&args.job, config) {
        Ok(j) => j,
        Err(d) => {
            print_diags(&d);
            return Exit::Usage;
        }
    };
    if let Some(n) = args.max_concurrency {
        job.run.max_concurrency = Limit::Count(n);
    }
    // Opened before AWS is asked anything, so a bad key or state dir fails fast (not needed for --dry-run).
    let prepared = if args.dry_run {
        None
    } else {
        let store = match Store::open(&config.state_dir).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("opsd: {e}");
                return Exit::Software;
            }
        };
        match Connector::new(&job.ssh, Arc::new(store.clone())) {
            Ok(c) => Some((store, Arc::new(c))),
            Err(e) => {
                eprintln!("opsd: job {}: {e}", job.name);
                return Exit::Usage;
            }
        }
    };
    let sdk = match crate::aws::load(&config.aws).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Usage;
        }
    };
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let hosts = tokio::select! {
        h = fleet::resolve(&ec2, &job.target, config.aws.page_size) => h,
        _ = cancel.cancelled() => { eprintln!("opsd: cancelled while resolving the target"); return Exit::HostsFailed; }
    };
    let hosts = match hosts {
        Ok(h) => h,
        Err(e) => {
            eprintln!("opsd: job {}: {e}", job.name);
            return Exit::Unavailable;
        }
    };
    match prepared {
        None => dry_run(&job, &hosts, args.output),
        Some((store, connector)) => execute(&job, hosts, store, connector, args.output, cancel).await,
    }
}

fn dry_run(job: &Job, hosts: &[Host], output: OutputFormat) -> Exit {
    match output {
        OutputFormat::Json => {
            let doc = serde_json::json!({ "job": job.name, "dry_run": true, "target": job.target, "hosts": hosts });
            outln!("{doc}");
        }
        OutputFormat::Text => {
            for h in hosts {
                outln!(
                    "{:<20} {:<16} {}",
                    h.instance_id.as_deref().unwrap_or("-"),
                    h.address.as_deref().unwrap_or("(no address)"),
                    h.name.as_deref().unwrap_or("")
                );
            }
            outln!("{}: {} hosts would run: {}", job.name, hosts.len(), job.run.commands.join(" && "));
        }
    }
    if hosts.is_empty() {
        Exit::NoHosts
    } else {
        Exit::Ok
    }
}

async fn execute(
    job: &Job,
    hosts: Vec<Host>,
    store: Store,
    connector: Arc<Connector>,
    output: OutputFormat,
    cancel: CancellationToken,
) -> Exit {
    let started_at = Utc::now();
    let clock = Instant::now();
    let n = hosts.len();
    let mut store_failed = false;
    let run_id = match store.start_run(&job.name, "manual", n, started_at).await {
        Ok(id) => Some(id),
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    let run_id_v = run_id.unwrap_or_default();
    tracing::info!(job = %job.name, run = run_id_v, hosts = n, "run started");
    let mut results: Vec<Option<HostResult>> = vec![None; n];
    if n > 0 {
        let json = output == OutputFormat::Json;
        let labels = hosts.iter().map(|h| format!("[{}]", h.label())).collect();
        let plan = Arc::new(Plan {
            concurrency: job.run.max_concurrency.concurrency(n),
            error_budget: job.run.max_errors.error_budget(n),
            hosts,
            commands: job.run.commands.clone(),
            output_limit: job.run.output_limit,
            timeout: job.run.timeout,
            live_output: !json,
        });
        let mut live = Live::new(labels, std::io::stdout().is_terminal(), json);
        let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
        let runner = tokio::spawn(runner::run(plan, connector, tx, cancel.clone()));
        let mut failed = 0;
        while let Some(ev) = rx.recv().await {
            if let Event::Finished { result, .. } = &ev {
                failed += (result.status == HostStatus::Failed) as usize;
            }
            live.on_event(&ev, failed);
            if let Event::Finished { seq, result } = ev {
                // Shared with the store's blocking thread, then taken back without a copy.
                let result = Arc::new(*result);
                if let Err(e) = store.record_host(run_id_v, seq, result.clone()).await {
                    tracing::error!("cannot record host {}: {e}", result.host.label());
                    store_failed = true;
                }
                results[seq] = Some(Arc::unwrap_or_clone(result));
            }
        }
        live.finish();
        if let Err(e) = runner.await {
            eprintln!("opsd: the run failed internally: {e}");
            return Exit::Software;
        }
    }
    let results: Vec<HostResult> = results.into_iter().flatten().collect();
    let counts = Counts::of(&results);
    let ended_at = Utc::now();
    let end = RunEnd {
        outcome: counts.outcome(),
        ok: counts.ok,
        failed: counts.failed + counts.cancelled,
        skipped: counts.skipped,
    };
    // Recorded even after cancellation: the store call is its own short future, not the cancelled one.
    if let Err(e) = store.finish_run(run_id_v, end, ended_at).await {
        eprintln!("opsd: {e}");
        store_failed = true;
    }
    match output {
        OutputFormat::Json => {
            let doc = RunDocument {
                run_id,
                job: &job.name,
                trigger: "manual",
                started_at: started_at.to_rfc3339(),
                ended_at: ended_at.to_rfc3339(),
                outcome: counts.outcome(),
                counts,
                hosts: &results,
            };
            match serde_json::to_string(&doc) {
                Ok(s) => outln!("{s}"),
                Err(e) => eprintln!("opsd: cannot render JSON: {e}"),
            }
        }
        OutputFormat::Text => out!("{}", report::summary(&job.name, run_id, &results, clock.elapsed())),
    }
    if store_failed {
        Exit::Software
    } else if n == 0 {
        eprintln!("opsd: no instance matched the target of {}; check its tags and states with --dry-run", job.name);
        Exit::NoHosts
    } else if counts.ok == n {
        Exit::Ok
    } else {
        Exit::HostsFailed
    }
}

async fn history(config: &Config, args: HistoryArgs) -> Exit {
    let store = match Store::open(&config.state_dir).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    if let Some(id) = args.run {
        let (run, hosts) = match store.run(id).await {
            Ok(r) => r,
            Err(crate::store::StoreError::NoSuchRun(id)) => {
                eprintln!("opsd: run {id} is not in the history; `opsd history` lists the runs");
                return Exit::Usage;
            }
            Err(e) => {
                eprintln!("opsd: {e}");
                return Exit::Software;
            }
        };
        match args.output {
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
                        let status = c
                            .exit_status
                            .map(|s| s.to_string())
                            .or(c.exit_signal.clone())
                            .unwrap_or_else(|| "-".into());
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
        return Exit::Ok;
    }
    let runs = match store.runs(args.job.clone(), args.limit).await {
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
                    r.trigger,
                    r.started_at,
                    r.outcome,
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
