//! `opsd run JOB`: resolve the job's hosts (EC2 or a hosts file), run it with a live view, record
//! it, print the summary or the JSON document, and exit with a code a script can trust.

use super::RunArgs;
use crate::cluster::host_keys::ClusterPins;
use crate::diag::print_diags;
use crate::exit::Exit;
use crate::jobs::execute;
use crate::jobs::history::RunHistory;
use crate::jobs::outcome::{Host, Trigger, TriggerKind};
use crate::jobs::report::{self, Live, RunDocument};
use crate::jobs::settings::JobDefaults;
use crate::jobs::spec::{self, Job};
use crate::jobs::target;
use crate::output::OutputFormat;
use crate::ssh::pins::StorePins;
use crate::ssh::{Auth, Connector, HostKeyPolicy, KeyPins, Services};
use crate::store::Store;
use crate::units::Limit;
use crate::{out, outln};
use std::future::Future;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where `opsd run` finds its job and reaches the store and AWS. The store and the SDK config are
/// futures, opened only when the run needs them (a dry run records nothing; a hosts file needs no AWS).
pub struct Env<'a, S, A> {
    pub jobs_dir: &'a Path,
    pub defaults: &'a JobDefaults,
    pub store: S,
    pub sdk: A,
    /// DescribeInstances' page size (`aws.page_size`).
    pub page_size: u16,
    /// With `[cluster]`: console and lifecycle host keys are shared through its table.
    pub cluster: Option<&'a crate::cluster::ClusterSettings>,
}

pub async fn run<S, A>(args: RunArgs, env: Env<'_, S, A>, cancel: CancellationToken) -> Exit
where
    S: Future<Output = Result<Store, Exit>>,
    A: Future<Output = Result<aws_config::SdkConfig, Exit>>,
{
    let mut job = match spec::find(&args.job, env.jobs_dir, env.defaults) {
        Ok(j) => j,
        Err(d) => {
            print_diags(&d);
            return Exit::Usage;
        }
    };
    if let Some(n) = args.max_concurrency {
        job.run.max_concurrency = Limit::Count(n);
    }
    // EC2 Instance Connect and console host keys need AWS even for a hosts file: the SDK config is
    // loaded first then.
    let mut sdk = None;
    let mut env_sdk = Some(env.sdk);
    let shared_keys =
        env.cluster.filter(|_| matches!(job.ssh.host_keys, HostKeyPolicy::Console | HostKeyPolicy::Pinned));
    if !args.dry_run
        && (job.ssh.auth == Auth::InstanceConnect || job.ssh.host_keys.needs_aws() || shared_keys.is_some())
    {
        match env_sdk.take().expect("the SDK future is there").await {
            Ok(s) => sdk = Some(s),
            Err(exit) => return exit,
        }
    }
    // Opened before AWS is asked anything (the SDK config alone may be loaded first, above), so a
    // bad key or state dir fails fast (not needed for --dry-run).
    let prepared = if args.dry_run {
        None
    } else {
        let store = match env.store.await {
            Ok(s) => s,
            Err(exit) => return exit,
        };
        let runs = RunHistory::new(store.clone());
        // Runs an opsd process left running when it died are recorded interrupted now.
        if let Err(e) = runs.interrupt_dead().await {
            tracing::warn!("cannot check for runs left by opsd processes that are gone: {e}");
        }
        let mut pins: Arc<dyn KeyPins> = Arc::new(StorePins(store.clone()));
        if let (Some(c), Some(sdk)) = (shared_keys, &sdk) {
            let table = crate::cluster::table::Table::new(sdk, &c.table);
            pins = Arc::new(ClusterPins::new(pins, table, tokio::runtime::Handle::current()));
        }
        let services = match &sdk {
            Some(sdk) => Services::with_aws(pins, sdk),
            None => Services { pins, push: None, console: None },
        };
        match Connector::load(&job.ssh, services).await {
            Ok(c) => Some((runs, Arc::new(c))),
            Err(e) => {
                eprintln!("opsd: job {}: {e}", job.name);
                return Exit::Usage;
            }
        }
    };
    if let Some(path) = &args.hosts_file {
        let hosts = match target::hosts_file(path) {
            Ok(h) => h,
            Err(d) => {
                print_diags(&[d]);
                return Exit::Usage;
            }
        };
        return match prepared {
            None => dry_run(&job, &hosts, args.output),
            Some((runs, connector)) => execute(&job, hosts, runs, connector, args.output, cancel).await,
        };
    }
    let sdk = match (sdk, env_sdk) {
        (Some(s), _) => s,
        (None, Some(f)) => match f.await {
            Ok(s) => s,
            Err(exit) => return exit,
        },
        (None, None) => unreachable!("the SDK config is loaded or still to load"),
    };
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let hosts = tokio::select! {
        h = target::resolve(&ec2, &job.target, env.page_size) => h,
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
        Some((runs, connector)) => execute(&job, hosts, runs, connector, args.output, cancel).await,
    }
}

fn dry_run(job: &Job, hosts: &[Host], output: OutputFormat) -> Exit {
    match output {
        OutputFormat::Json => {
            let hosts: Vec<serde_json::Value> = hosts
                .iter()
                .map(|h| {
                    let mut v = serde_json::to_value(h).unwrap_or_default();
                    v["auth"] = job.ssh.auth_for(h.instance_id.as_deref()).into();
                    v["host_keys"] = job.ssh.host_keys_for(h.instance_id.as_deref()).into();
                    v
                })
                .collect();
            let script = job.run.script.as_ref().map(|s| serde_json::json!({ "path": s.path, "args": s.args }));
            let run = serde_json::json!({ "commands": job.run.commands, "script": script });
            let doc = serde_json::json!({ "job": job.name, "dry_run": true, "target": job.target, "run": run, "hosts": hosts });
            outln!("{doc}");
        }
        OutputFormat::Text => {
            for h in hosts {
                let id = h.instance_id.as_deref();
                outln!(
                    "{:<20} {:<16} {:<24} auth: {}; host keys: {}",
                    id.unwrap_or("-"),
                    h.address.as_deref().unwrap_or("(no address)"),
                    h.name.as_deref().unwrap_or(""),
                    job.ssh.auth_for(id),
                    job.ssh.host_keys_for(id)
                );
            }
            let mut what = job.run.commands.join(" && ");
            if let Some(s) = &job.run.script {
                let args: Vec<String> = s.args.iter().map(|a| crate::ssh::shell_quote(a)).collect();
                let then = if what.is_empty() { "" } else { ", then " };
                what = format!("{what}{then}the script {} {}", s.path.display(), args.join(" ")).trim_end().to_string();
            }
            outln!("{}: {} hosts would run: {what}", job.name, hosts.len());
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
    runs: RunHistory,
    connector: Arc<Connector>,
    output: OutputFormat,
    cancel: CancellationToken,
) -> Exit {
    let clock = Instant::now();
    let n = hosts.len();
    let json = output == OutputFormat::Json;
    let labels = hosts.iter().map(|h| format!("[{}]", h.label())).collect();
    let mut live = Live::new(labels, std::io::stdout().is_terminal(), json);
    let req = execute::Request { job, hosts, store: &runs, connector, trigger: Trigger::MANUAL, live_output: !json };
    let report = execute::run(req, |ev, failed| live.on_event(ev, failed), cancel).await;
    live.finish();
    let report = match report {
        Ok(r) => r,
        Err(e @ execute::ExecuteError::Script { .. }) => {
            eprintln!("opsd: {e}");
            return Exit::Usage;
        }
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
                trigger: TriggerKind::Manual,
                started_at: report.started_at.to_rfc3339(),
                ended_at: report.ended_at.to_rfc3339(),
                outcome: report.counts.outcome(),
                counts: report.counts,
                script_sha256: report.script_sha256.as_deref(),
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
