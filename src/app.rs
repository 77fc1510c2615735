//! The commands, dispatched: the config is loaded once, then each command goes to the wing that
//! owns it (`jobs::commands`, `lifecycle::status`, `capacity::status`) or to the daemon. Here are
//! only what every command shares: opening the store, loading the AWS SDK config, signals.

use crate::cli::{Cli, Command};
use crate::cluster::commands::ClusterCommand;
use crate::config::Config;
use crate::diag::print_diags;
use crate::exit::Exit;
use crate::jobs::commands::{self as jobs, run::Env};
use crate::jobs::history::RunHistory;
use crate::store::Store;
use tokio_util::sync::CancellationToken;

pub async fn main(cli: Cli, cancel: CancellationToken) -> Exit {
    // Needs no config: a packager's build machine has none.
    if let Command::PackageDocs { dir } = &cli.command {
        return crate::docs::command(dir);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(diags) => {
            print_diags(&diags);
            return Exit::Usage;
        }
    };
    crate::logging::init(config.log_format, matches!(cli.command, Command::Daemon));
    let defaults = config.job_defaults();
    match cli.command {
        Command::Daemon => crate::daemon::run(config, cancel).await,
        Command::Run(args) => {
            let env = Env {
                jobs_dir: &config.jobs_dir,
                defaults: &defaults,
                store: open_store(&config),
                sdk: load_sdk(&config),
                page_size: config.aws.page_size,
                cluster: config.cluster.as_ref(),
            };
            jobs::run(args, env, cancel).await
        }
        Command::PackageDocs { dir } => crate::docs::command(&dir),
        Command::Validate { paths } => jobs::validate(&paths, &config.jobs_dir, &defaults, &config.name()),
        Command::Jobs(args) => jobs::list(args, &config.jobs_dir, &defaults, existing_store(&config).await).await,
        Command::History(args) if config.cluster.is_some() && !args.local && args.run.is_none() => {
            let c = config.cluster.as_ref().expect("checked");
            match load_sdk(&config).await {
                Ok(sdk) => {
                    let table = crate::cluster::table::Table::new(&sdk, &c.table);
                    jobs::cluster_history(args, &config.jobs_dir, &table).await
                }
                Err(exit) => exit,
            }
        }
        Command::History(args) => match read_store(&config).await {
            Ok(store) => jobs::history(args, RunHistory::new(store)).await,
            Err(exit) => exit,
        },
        Command::Lifecycle(cmd) => {
            crate::lifecycle::status::run(cmd, config.lifecycle.as_ref(), read_store(&config), load_sdk(&config)).await
        }
        Command::Capacity(cmd) => {
            crate::capacity::status::run(cmd, config.capacity.as_ref(), read_store(&config), load_sdk(&config)).await
        }
        Command::Cluster(cmd) => cluster(cmd, &config).await,
        Command::Hosts(cmd) => crate::ssh::keys_command::run(cmd, read_store(&config)).await,
    }
}

/// `opsd cluster …`: the table's commands, with the jobs wing's recent firings in the status.
async fn cluster(cmd: ClusterCommand, config: &Config) -> Exit {
    let Some(c) = &config.cluster else {
        eprintln!("opsd: the config has no [cluster] section; add one with table = \"NAME\" to run daemons as one");
        return Exit::Usage;
    };
    let sdk = match load_sdk(config).await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    match cmd {
        ClusterCommand::Init => crate::cluster::commands::init(c, &sdk).await,
        ClusterCommand::Status { output } => {
            let table = crate::cluster::table::Table::new(&sdk, &c.table);
            let firings = jobs::cluster_section(&config.jobs_dir, &table).await;
            crate::cluster::commands::status(&table, vec![firings], output).await
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

/// The store, or the exit code (70) once the reason is printed.
pub async fn open_store(config: &Config) -> Result<Store, Exit> {
    Store::open(&config.state_dir, crate::schema::MIGRATIONS).await.map_err(|e| {
        eprintln!("opsd: {e}");
        Exit::Software
    })
}

/// The run history only if a store exists already (`opsd jobs` must not create one), read only.
async fn existing_store(config: &Config) -> Option<RunHistory> {
    if !config.state_dir.join("opsd.db").exists() {
        return None;
    }
    Store::open_read_only(&config.state_dir, crate::schema::MIGRATIONS).await.ok().map(RunHistory::new)
}

/// The store for a command that only reads it (`history`, the status commands): never created,
/// migrated or written; the exit code (70) once the reason is printed.
async fn read_store(config: &Config) -> Result<Store, Exit> {
    Store::open_read_only(&config.state_dir, crate::schema::MIGRATIONS).await.map_err(|e| {
        eprintln!("opsd: {e}");
        Exit::Software
    })
}

/// The AWS SDK configuration, or the exit code (64: no region) once the reason is printed.
pub async fn load_sdk(config: &Config) -> Result<aws_config::SdkConfig, Exit> {
    crate::aws::load(&config.aws).await.map_err(|e| {
        eprintln!("opsd: {e}");
        Exit::Usage
    })
}
