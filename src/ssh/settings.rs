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

impl Settings {
    /// How a host would be authenticated, as `opsd run --dry-run` shows it.
    pub fn auth_for(&self, instance_id: Option<&str>) -> String {
        let ec2 = instance_id.is_some_and(|i| i.starts_with("i-"));
        match &self.auth {
            Auth::Key(file) => format!("key {}", file.display()),
            Auth::InstanceConnect if ec2 => "instance-connect".into(),
            Auth::InstanceConnect => "instance-connect (no instance id: would fail)".into(),
        }
    }

    /// Where a host's key would be checked against, as `opsd run --dry-run` shows it.
    pub fn host_keys_for(&self, instance_id: Option<&str>) -> String {
        let ec2 = instance_id.is_some_and(|i| i.starts_with("i-"));
        match self.host_keys {
            HostKeyPolicy::KnownHosts => format!("known-hosts {}", self.known_hosts.display()),
            HostKeyPolicy::Tofu => "tofu".into(),
            HostKeyPolicy::Console if ec2 => "console".into(),
            HostKeyPolicy::Pinned if ec2 => "pinned".into(),
            HostKeyPolicy::Console | HostKeyPolicy::Pinned => {
                format!("{} (no instance id: would be refused)", self.host_keys.as_str())
            }
        }
    }
}

impl HostKeyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            HostKeyPolicy::KnownHosts => "known-hosts",
            HostKeyPolicy::Tofu => "tofu",
            HostKeyPolicy::Console => "console",
            HostKeyPolicy::Pinned => "pinned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_says_what_a_host_without_an_instance_id_would_meet() {
        let s = Settings {
            user: "u".into(),
            port: 22,
            auth: Auth::InstanceConnect,
            host_keys: HostKeyPolicy::Console,
            known_hosts: PathBuf::from("/k"),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        };
        assert_eq!(s.auth_for(Some("i-0abc")), "instance-connect");
        assert_eq!(s.auth_for(None), "instance-connect (no instance id: would fail)");
        assert_eq!(s.host_keys_for(Some("10.0.0.1")), "console (no instance id: would be refused)");
        let k = Settings { auth: Auth::Key("/id".into()), host_keys: HostKeyPolicy::KnownHosts, ..s };
        assert_eq!((k.auth_for(None), k.host_keys_for(None)), ("key /id".into(), "known-hosts /k".into()));
    }
}
