//! The commands, assembled from the parts: each returns the [`Exit`] the process ends with, and
//! prints what the user needs (diagnostics to stderr, results to stdout).

use crate::cli::{Cli, Command, HistoryArgs, OutputFormat, RunArgs};
use crate::config::Config;
use crate::diag::Diagnostic;
use crate::execute::{self, Trigger};
use crate::exit::Exit;
use crate::fleet::{self, Host};
use crate::job::{self, calendar, units::Limit, Job};
use crate::report::{self, Live, RunDocument};
use crate::ssh::Connector;
use crate::store::Store;
use crate::{out, outln};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn main(cli: Cli, cancel: CancellationToken) -> Exit {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(diags) => {
            print_diags(&diags);
            return Exit::Usage;
        }
    };
    crate::logging::init(config.log_format, matches!(cli.command, Command::Daemon));
    match cli.command {
        Command::Daemon => crate::daemon::run(config, cancel).await,
        Command::Run(args) => run(&config, args, cancel).await,
        Command::Validate { paths } => validate(&config, &paths),
        Command::Jobs => jobs(&config).await,
        Command::History(args) => history(&config, args).await,
        Command::Lifecycle(crate::cli::LifecycleCommand::Status { limit, output }) => {
            lifecycle_status(&config, limit, output).await
        }
        Command::Capacity(crate::cli::CapacityCommand::Status { limit, output }) => {
            capacity_status(&config, limit, output).await
        }
    }
}

/// SIGINT or SIGTERM cancels the token (`opsd run`: running commands are killed and recorded as
/// cancelled; the daemon: its graceful shutdown). `what` says which, in the log.
pub async fn cancel_on_signals(cancel: CancellationToken, what: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will end opsd without recording the run");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::warn!("stopping: {what} (signal again to quit at once)");
    cancel.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("opsd: second signal: quitting without waiting for cleanup");
    std::process::exit(130);
}

/// The run history, or the exit code (70) once the reason is printed.
async fn open_store(config: &Config) -> Result<Store, Exit> {
    Store::open(&config.state_dir).await.map_err(|e| {
        eprintln!("opsd: {e}");
        Exit::Software
    })
}

/// The AWS SDK configuration, or the exit code (64: no region) once the reason is printed.
async fn load_sdk(config: &Config) -> Result<aws_config::SdkConfig, Exit> {
    crate::aws::load(&config.aws).await.map_err(|e| {
        eprintln!("opsd: {e}");
        Exit::Usage
    })
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

async fn jobs(config: &Config) -> Exit {
    let files = match job::files_in(&config.jobs_dir) {
        Ok(f) => f,
        Err(d) => {
            print_diags(&[d]);
            return Exit::Usage;
        }
    };
    // Rate schedules count from the job's last firing; read it only from an existing store.
    let store =
        if config.state_dir.join("opsd.db").exists() { Store::open(&config.state_dir).await.ok() } else { None };
    let now = chrono::Utc::now();
    outln!("{:<24} {:<28} {:<40} DESCRIPTION", "JOB", "SCHEDULE", "TARGET");
    for f in files {
        match job::load(&f, config) {
            Ok(j) => {
                let tags: Vec<String> = j.target.tags.0.iter().map(|(k, v)| format!("{k}={}", v.join("|"))).collect();
                let target = format!(
                    "{} [{}]",
                    tags.join(","),
                    j.target.states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                );
                let Some(t) = &j.timing else {
                    outln!("{:<24} {:<28} {:<40} {}", j.name, "(by hand)", target, j.description);
                    continue;
                };
                let schedule = if t.timezone == chrono_tz::Tz::UTC {
                    t.schedule.to_string()
                } else {
                    format!("{} {}", t.schedule, t.timezone)
                };
                outln!("{:<24} {:<28} {:<40} {}", j.name, schedule, target, j.description);
                let last = match &store {
                    Some(s) => s.last_firing(&j.name).await.ok().flatten(),
                    None => None,
                };
                let anchor = last.unwrap_or(now);
                for at in calendar::upcoming(&t.schedule, now, t.timezone, anchor, 3) {
                    let local = at.with_timezone(&t.timezone);
                    outln!("  next {}  ({} UTC)", local.format("%Y-%m-%d %H:%M:%S %Z"), at.format("%Y-%m-%d %H:%M:%S"));
                }
                if last.is_none() && matches!(t.schedule, job::schedule::Schedule::Rate { .. }) {
                    outln!("  (no firing recorded yet: a rate counts from when the daemon loads the job)");
                }
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
        let store = match open_store(config).await {
            Ok(s) => s,
            Err(exit) => return exit,
        };
        match Connector::new(&job.ssh, Arc::new(store.clone())) {
            Ok(c) => Some((store, Arc::new(c))),
            Err(e) => {
                eprintln!("opsd: job {}: {e}", job.name);
                return Exit::Usage;
            }
        }
    };
    if let Some(path) = &args.hosts_file {
        let hosts = match fleet::hosts_file(path) {
            Ok(h) => h,
            Err(d) => {
                print_diags(&[d]);
                return Exit::Usage;
            }
        };
        return match prepared {
            None => dry_run(&job, &hosts, args.output),
            Some((store, connector)) => execute(&job, hosts, store, connector, args.output, cancel).await,
        };
    }
    let sdk = match load_sdk(config).await {
        Ok(s) => s,
        Err(exit) => return exit,
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
    let clock = Instant::now();
    let n = hosts.len();
    let json = output == OutputFormat::Json;
    let labels = hosts.iter().map(|h| format!("[{}]", h.label())).collect();
    let mut live = Live::new(labels, std::io::stdout().is_terminal(), json);
    let req = execute::Request { job, hosts, store: &store, connector, trigger: Trigger::MANUAL, live_output: !json };
    let report = execute::run(req, |ev, failed| live.on_event(ev, failed), cancel).await;
    live.finish();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    match output {
        OutputFormat::Json => {
            let doc = RunDocument {
                run_id: Some(report.run_id),
                job: &job.name,
                trigger: "manual",
                started_at: report.started_at.to_rfc3339(),
                ended_at: report.ended_at.to_rfc3339(),
                outcome: report.counts.outcome(),
                counts: report.counts,
                hosts: &report.results,
            };
            // Streamed, not rendered into one string first: with every host's kept output the
            // document is as large as the output cap × hosts, and it need not be in memory twice.
            use std::io::Write as _;
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            let written = serde_json::to_writer(&mut w, &doc).map_err(std::io::Error::from).and_then(|_| {
                writeln!(w)?;
                w.flush()
            });
            if let Err(e) = written {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("opsd: cannot write the JSON document: {e}");
                }
            }
        }
        OutputFormat::Text => {
            out!("{}", report::summary(&job.name, Some(report.run_id), &report.results, clock.elapsed()))
        }
    }
    if report.store_failed {
        eprintln!("opsd: the run completed but its history is incomplete (see the errors above)");
        Exit::Software
    } else if n == 0 {
        eprintln!("opsd: no instance matched the target of {}; check its tags and states with --dry-run", job.name);
        Exit::NoHosts
    } else if report.counts.ok == n {
        Exit::Ok
    } else {
        Exit::HostsFailed
    }
}

async fn history(config: &Config, args: HistoryArgs) -> Exit {
    let store = match open_store(config).await {
        Ok(s) => s,
        Err(exit) => return exit,
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

async fn lifecycle_status(config: &Config, limit: usize, output: OutputFormat) -> Exit {
    let Some(l) = &config.lifecycle else {
        eprintln!("opsd: the config has no [lifecycle] section; add one with queue_url to consume lifecycle hooks");
        return Exit::Usage;
    };
    let store = match open_store(config).await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let actions = match store.actions(limit).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    let sdk = match load_sdk(config).await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let (_, _, sqs) = crate::lifecycle::clients(&sdk);
    let (visible, in_flight) = match crate::lifecycle::queue_depth(&sqs, &l.queue_url).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("opsd: queue {}: {e}; check queue_url and sqs:GetQueueAttributes", l.queue_url);
            return Exit::Unavailable;
        }
    };
    match output {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::json!({ "queue_url": l.queue_url, "messages_waiting": visible, "messages_in_flight": in_flight, "actions": actions })
        ),
        OutputFormat::Text => {
            outln!("queue {}: {visible} waiting, {in_flight} being worked (in flight)", l.queue_url);
            outln!(
                "{:<24} {:<10} {:<20} {:<9} {:<16} {:<22} {:>8} {:>8} ERROR",
                "ENDED",
                "KIND",
                "INSTANCE",
                "RESULT",
                "OUTCOME",
                "INTERFACE",
                "TOOK_MS",
                "AWS_MS"
            );
            for a in actions {
                outln!(
                    "{:<24} {:<10} {:<20} {:<9} {:<16} {:<22} {:>8} {:>8} {}",
                    a.ended_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    a.transition,
                    a.instance_id,
                    a.result,
                    a.outcome,
                    a.eni_id.as_deref().unwrap_or("-"),
                    (a.ended_at - a.started_at).num_milliseconds(),
                    a.aws_ms.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    a.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Exit::Ok
}

async fn capacity_status(config: &Config, limit: usize, output: OutputFormat) -> Exit {
    let Some(c) = &config.capacity else {
        eprintln!("opsd: the config has no [capacity] section; add one with cluster and spot_fleet_request_id or auto_scaling_group");
        return Exit::Usage;
    };
    let store = match open_store(config).await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let decisions = match store.decisions(limit).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    let sdk = match load_sdk(config).await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let clients = crate::capacity::clients(&sdk);
    let seen = match crate::capacity::observe::observe(&clients, &c.cluster, &c.target()).await {
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
    let latest = store.capacity_latest().await.ok().flatten();
    let wall = chrono::Utc::now();
    let ago = |at: chrono::DateTime<chrono::Utc>| (wall - at).num_milliseconds() as f64 / 1000.0;
    // Older than the controller ever goes without one, or of another cluster or fleet (the config
    // changed since): shown, not used.
    let stale = crate::capacity::stale_after(c).as_secs_f64();
    let scope = crate::capacity::scope(c);
    let fresh = latest.as_ref().filter(|l| ago(l.decision.at) <= stale && l.scope == scope);
    let mut mem = crate::capacity::remembered(&store).await;
    if let Some(l) = fresh {
        mem.below_target_since = l.below_target_since.map(|t| -ago(t));
    }
    let now = crate::capacity::decide(&seen, &mem, c, 0.0);
    let (kind, to, victims) = crate::capacity::action_parts(&now.action, seen.fleet.target);
    let desired = fresh.map(|l| l.decision.to_capacity).unwrap_or(to);
    let (cpu, res_mem) = reservation_parts(&seen.observation.instances);
    match output {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::json!({
                "cluster": c.cluster,
                "target": c.target().to_string(),
                "reservation": { "cpu": cpu, "memory": res_mem, "max": now.reservation },
                "instances": seen.observation.instances.len(),
                "unplaced_tasks": seen.observation.unplaced.len(),
                "short_services": seen.short_services.iter().map(|(n, m)| serde_json::json!({"service": n, "missing": m})).collect::<Vec<_>>(),
                "capacity": { "target": seen.fleet.target, "fulfilled": seen.fleet.fulfilled, "desired": desired, "state": seen.fleet_state },
                "daemon": latest.as_ref().map(|l| serde_json::json!({
                    "at": l.decision.at,
                    "age_seconds": ago(l.decision.at),
                    "current": fresh.is_some(),
                    "scope": l.scope,
                    "action": l.decision.action,
                    "to_capacity": l.decision.to_capacity,
                    "victims": l.decision.victims.split(',').filter(|v| !v.is_empty()).collect::<Vec<_>>(),
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
                        "daemon ({:.0}s ago{note}): {}{}: {}",
                        ago(d.at),
                        d.action.replace('_', " "),
                        if d.action == "hold" { String::new() } else { format!(" to {}", d.to_capacity) },
                        d.reason
                    )
                }
                None => outln!("daemon: no evaluation recorded yet (is `opsd daemon` running with this [capacity]?)"),
            }
            outln!(
                "now: {}{}: {}",
                kind.replace('_', " "),
                if kind == "hold" { String::new() } else { format!(" to {to}") },
                now.reason
            );
            print_decisions(decisions);
        }
    }
    Exit::Ok
}

fn print_decisions(decisions: Vec<crate::store::DecisionRecord>) {
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

/// CPU and memory reservation, percent, over ACTIVE container instances.
fn reservation_parts(instances: &[crate::capacity::policy::Instance]) -> (f64, f64) {
    let (mut rc, mut rm, mut uc, mut um) = (0u64, 0u64, 0u64, 0u64);
    for i in instances.iter().filter(|i| !i.draining) {
        rc += u64::from(i.registered.cpu);
        rm += u64::from(i.registered.mem);
        uc += u64::from(i.registered.cpu.saturating_sub(i.remaining.cpu));
        um += u64::from(i.registered.mem.saturating_sub(i.remaining.mem));
    }
    let pct = |u: u64, r: u64| if r == 0 { 0.0 } else { 100.0 * u as f64 / r as f64 };
    (pct(uc, rc), pct(um, rm))
}
