//! Log output (tracing). Commands log warnings to stderr; the daemon logs from `info` to stdout,
//! where journald (or a shipper, with `log_format = "json"`) picks the lines up. `OPSD_LOG` takes
//! an EnvFilter directive (`debug`, `opsd=debug,russh=warn`) and overrides the level.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// `log_format` in the config: how `opsd daemon` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people (and journald).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Install the global subscriber; call once.
pub fn init(format: LogFormat, daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("OPSD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (format, daemon) {
        (LogFormat::Json, true) => builder.json().flatten_event(true).with_writer(std::io::stdout).try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, true) => {
            builder.with_ansi(std::io::stdout().is_terminal()).with_writer(std::io::stdout).try_init()
        }
        (LogFormat::Text, false) => {
            builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init()
        }
    };
    if let Err(e) = result {
        eprintln!("opsd: cannot set up logging: {e}");
    }
}
