//! `opsd hosts keys [INSTANCE…]`: the host keys opsd trusts, per instance, where each came from
//! (`tofu`: the first key a host offered; `console`: its console output, read by a run; `lifecycle`:
//! its console output, read while it launched) and when. Reads the store, never writes it.

use super::fingerprint;
use crate::exit::Exit;
use crate::output::OutputFormat;
use crate::store::Store;
use crate::{out, outln};
use clap::Subcommand;
use russh::keys::ssh_key::PublicKey;
use serde::Serialize;
use std::future::Future;

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// The host keys opsd trusts per instance: where each came from (tofu, console, lifecycle) and when.
    #[command(
        after_help = "Examples:\n  opsd hosts keys\n  opsd hosts keys i-0abc123 i-0def456 --output json\n\nExit codes:\n  0   shown\n  3   none of the named instances has a key\n  70  the store could not be read"
    )]
    Keys {
        /// Instance ids (or addresses, for hosts named by address) [default: every host].
        instances: Vec<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

/// One trusted key.
#[derive(Debug, Serialize)]
pub struct TrustedKey {
    pub instance_id: String,
    pub source: String,
    /// TOFU pins are per port (0: pinned before ports were recorded, good for any); instance keys are not.
    pub port: Option<u16>,
    pub address: Option<String>,
    pub key: String,
    pub fingerprint: String,
    pub since: String,
}

pub async fn run<S: Future<Output = Result<Store, Exit>>>(cmd: HostsCommand, store: S) -> Exit {
    let HostsCommand::Keys { instances, output } = cmd;
    let store = match store.await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let keys = match store.call(all_keys).await {
        Ok(k) => k,
        Err(e) => {
            eprintln!("opsd: cannot read the host keys: {e}");
            return Exit::Software;
        }
    };
    let keys: Vec<TrustedKey> =
        keys.into_iter().filter(|k| instances.is_empty() || instances.contains(&k.instance_id)).collect();
    match output {
        OutputFormat::Json => outln!("{}", serde_json::json!({ "keys": keys })),
        OutputFormat::Text => {
            if keys.is_empty() {
                outln!("no host keys are trusted yet{}", if instances.is_empty() { "" } else { " for these hosts" });
            }
            for k in &keys {
                out!(
                    "{:<20} {:<9} {:<5} {:<52} {}\n",
                    k.instance_id,
                    k.source,
                    k.port.map(|p| p.to_string()).unwrap_or_else(|| "*".into()),
                    format!("{} {}", k.key.split_whitespace().next().unwrap_or_default(), k.fingerprint),
                    k.since
                );
            }
        }
    }
    if keys.is_empty() && !instances.is_empty() {
        Exit::NoHosts
    } else {
        Exit::Ok
    }
}

fn all_keys(c: &mut rusqlite::Connection) -> Result<Vec<TrustedKey>, crate::store::StoreError> {
    let mut st = c.prepare(
        "SELECT host_id, 'tofu', port, address, key, pinned_at FROM host_keys
         UNION ALL SELECT instance_id, source, NULL, NULL, key, recorded_at FROM instance_host_keys
         ORDER BY 1, 2, 3, 5",
    )?;
    let rows = st.query_map([], |r| {
        let key: String = r.get(4)?;
        Ok(TrustedKey {
            instance_id: r.get(0)?,
            source: r.get(1)?,
            port: r.get::<_, Option<i64>>(2)?.map(|p| p as u16),
            address: r.get(3)?,
            fingerprint: PublicKey::from_openssh(&key).map(|k| fingerprint(&k)).unwrap_or_else(|_| "?".into()),
            key,
            since: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
