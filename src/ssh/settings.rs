//! SSH settings: the config's `[ssh]` section (defaults for every job) and the settings one run
//! connects with, after a job's own `[ssh]` values are laid over the defaults.

use crate::units::HumanDuration;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Long enough for a TCP connect, key exchange and authentication across regions on a loaded host;
/// short enough that one dead host does not hold a run for long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[ssh]` in the config: defaults for jobs without their own values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    pub user: Option<String>,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub connect_timeout: HumanDuration,
    /// How jobs authenticate unless they say otherwise.
    pub auth: AuthMethod,
    /// Whether jobs may trust a host's first key (`host_keys = "tofu"`); false forbids it fleet-wide.
    pub allow_tofu: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            user: None,
            port: 22,
            identity_file: None,
            known_hosts: PathBuf::from("/etc/opsd/known_hosts"),
            connect_timeout: HumanDuration(DEFAULT_CONNECT_TIMEOUT),
            auth: AuthMethod::Key,
            allow_tofu: true,
        }
    }
}

/// How opsd proves who it is to a host (`auth` in `[ssh]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// A private key file (`identity_file`), listed in the user's authorized_keys on each host.
    #[default]
    Key,
    /// EC2 Instance Connect: a fresh ed25519 key per run, made in memory and pushed to each host
    /// with SendSSHPublicKey just before connecting; no private key at rest.
    InstanceConnect,
}

/// What one run authenticates with.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// The private key in this file.
    Key(PathBuf),
    /// A key made for the run and pushed with EC2 Instance Connect.
    InstanceConnect,
}

/// How a server's host key is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// The key must be listed in the known_hosts file from the config.
    #[default]
    KnownHosts,
    /// Trust on first use: pin the key in the store, refuse any later change.
    Tofu,
    /// The keys cloud-init printed to the instance's console at first boot (GetConsoleOutput), read
    /// once and kept in the store; an instance whose console has no key block is refused.
    Console,
    /// Only the keys the lifecycle action pinned while the instance launched
    /// (`[lifecycle] pin_host_keys = true`).
    Pinned,
}

impl HostKeyPolicy {
    /// Whether checking keys this way reads AWS (the console output).
    pub fn needs_aws(self) -> bool {
        self == HostKeyPolicy::Console
    }
}

/// What one run connects with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub user: String,
    pub port: u16,
    pub auth: Auth,
    pub host_keys: HostKeyPolicy,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
}
