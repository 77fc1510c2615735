//! The opsd binary: parse the command line, set up logging and the shutdown token, run, exit.

use clap::Parser;
use opsd::cli::Cli;
use opsd::exit::Exit;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage.code() } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opsd: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Software.code());
        }
    };
    let code = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let what = match cli.command {
            opsd::cli::Command::Daemon => "no new firings; running jobs get shutdown_grace to finish",
            _ => "killing running commands and recording the run as cancelled",
        };
        tokio::spawn(opsd::app::cancel_on_signals(cancel.clone(), what));
        opsd::app::main(cli, cancel).await
    });
    ExitCode::from(code.code())
}
