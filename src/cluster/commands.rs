//! `opsd cluster init` (create the table) and `opsd cluster status` (the members and, from the
//! wings, what they add).

use super::settings::ClusterSettings;
use super::table::Table;
use super::{lease, members};
use crate::exit::Exit;
use crate::outln;
use crate::output::OutputFormat;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create the cluster's DynamoDB table ([cluster] table) with on-demand billing and TTL.
    #[command(
        after_help = "Examples:\n  opsd cluster init\n\nNeeds dynamodb:CreateTable, dynamodb:DescribeTable and dynamodb:UpdateTimeToLive.\n\nExit codes:\n  0   created, or it existed\n  64  no [cluster] section in the config\n  69  DynamoDB refused or could not be reached"
    )]
    Init,
    /// The cluster's members with their last heartbeat and version, the leases (the capacity
    /// leader and its epoch), and the recent firings with the replica that ran each.
    #[command(
        after_help = "Examples:\n  opsd cluster status\n  opsd cluster status --output json\n\nExit codes:\n  0   shown\n  64  no [cluster] section in the config\n  69  the table could not be read (missing: `opsd cluster init`)"
    )]
    Status {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

/// What a wing adds to `opsd cluster status`: a JSON value under `key`, and lines of text.
pub struct Section {
    pub key: &'static str,
    pub json: serde_json::Value,
    pub text: Vec<String>,
}

/// `opsd cluster init`.
pub async fn init(settings: &ClusterSettings, sdk: &aws_config::SdkConfig) -> Exit {
    let table = Table::new(sdk, &settings.table);
    match table.create().await {
        Ok(true) => outln!("created the cluster table {} (on-demand, TTL on expires)", settings.table),
        Ok(false) => outln!("the cluster table {} exists already; TTL on expires is enabled", settings.table),
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Unavailable;
        }
    }
    Exit::Ok
}

/// `opsd cluster status`: the members, then each wing's section.
pub async fn status(table: &Table, sections: Vec<Section>, output: OutputFormat) -> Exit {
    let (members, leases) = match tokio::try_join!(members::list(table), lease::list(table)) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Unavailable;
        }
    };
    match output {
        OutputFormat::Json => {
            let mut doc = serde_json::json!({ "table": table.name(), "members": members, "leases": leases });
            for s in sections {
                doc[s.key] = s.json;
            }
            outln!("{doc}");
        }
        OutputFormat::Text => {
            outln!("cluster table {}: {} members", table.name(), members.len());
            outln!("{:<24} {:<24} {:>8} {:<10} {:<26} STARTED", "REPLICA", "HOST", "BEAT", "VERSION", "LAST HEARTBEAT");
            for m in &members {
                outln!(
                    "{:<24} {:<24} {:>8} {:<10} {:<26} {}",
                    m.replica,
                    m.host,
                    m.beat,
                    m.version,
                    m.beat_at,
                    m.started_at
                );
            }
            if !leases.is_empty() {
                outln!();
                outln!("{:<40} {:<24} {:>6} RENEWED", "LEASE", "LEADER", "EPOCH");
                for l in &leases {
                    let holder = if l.holder.is_empty() { "(released)" } else { l.holder.as_str() };
                    outln!("{:<40} {:<24} {:>6} {}", l.name, holder, l.epoch, l.renewed_at);
                }
            }
            for s in sections {
                outln!();
                for line in s.text {
                    outln!("{line}");
                }
            }
        }
    }
    Exit::Ok
}
