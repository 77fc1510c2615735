//! Host-key verification: what is known of a host's key before its handshake (known_hosts lines, a
//! TOFU pin, the keys its console printed, the keys pinned while it launched), and the check of the
//! key it presents, as russh's connection handler. A refusal says why and what to do.

use super::console::{ConsoleKeys, NO_BLOCK_HELP};
use super::known_hosts::{HostEntries, KnownHosts, Verdict};
use super::pins::KeySource;
use russh::client;
use russh::keys::ssh_key::{Algorithm, PublicKey};
use russh::keys::PublicKeyBase64;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where trusted host keys live ([`super::pins::StorePins`]); called from a blocking thread.
pub trait KeyPins: Send + Sync + 'static {
    /// Pin `key` (OpenSSH text) for `host_id` at `port` if none is pinned; return the pinned key.
    fn pin(&self, host_id: &str, port: u16, address: &str, key: &str) -> Result<String, String>;
    /// The key pinned for `host_id` at `port`, if any.
    fn pinned(&self, host_id: &str, port: u16) -> Result<Option<String>, String>;
    /// How an operator removes the pin of a rebuilt host.
    fn how_to_unpin(&self, host_id: &str, port: u16) -> String;
    /// The host keys recorded for an instance from `source` (any source when `None`).
    fn instance_keys(&self, instance_id: &str, source: Option<KeySource>) -> Result<Vec<String>, String>;
    /// Record an instance's host keys from `source`, unless some are recorded from it already;
    /// return the keys recorded from `source` in the end (the first set recorded stands).
    fn record_instance_keys(
        &self,
        instance_id: &str,
        keys: &[String],
        source: KeySource,
    ) -> Result<Vec<String>, String>;
}

/// How server keys are checked for one run.
#[derive(Clone)]
pub enum HostKeyCheck {
    KnownHosts {
        file: PathBuf,
        hosts: Arc<KnownHosts>,
    },
    Tofu(Arc<dyn KeyPins>),
    /// The keys the instance's console printed at first boot (read once, then kept in the store).
    Console {
        pins: Arc<dyn KeyPins>,
        console: Arc<dyn ConsoleKeys>,
    },
    /// Only keys the lifecycle action pinned while the instance launched.
    Pinned(Arc<dyn KeyPins>),
}

/// One host's known key material, resolved before its handshake.
pub enum Expected {
    /// The known_hosts lines that apply to the host.
    Listed { file: PathBuf, entries: HostEntries },
    /// TOFU: the pinned key (`None`: first use, pin what is offered), or why it could not be read.
    Pinned { pins: Arc<dyn KeyPins>, pinned: Result<Option<String>, String> },
    /// The instance's keys from a trusted source (`Err`: none, and why the host is refused).
    Instance { source: &'static str, keys: Result<Vec<String>, String> },
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(e.to_string()))
}

impl HostKeyCheck {
    /// What is already known about this host's key, looked up once before the handshake.
    pub async fn expected(&self, host_id: &str, address: &str, port: u16) -> Expected {
        match self {
            HostKeyCheck::KnownHosts { file, hosts } => {
                // Hashed lines cost an HMAC each: on a blocking thread, not the runtime's.
                let (h, a) = (hosts.clone(), address.to_string());
                let entries = tokio::task::spawn_blocking(move || h.lookup(&a, port)).await.unwrap_or_default();
                Expected::Listed { file: file.clone(), entries }
            }
            HostKeyCheck::Tofu(pins) => {
                let (p, id) = (pins.clone(), host_id.to_string());
                Expected::Pinned { pins: pins.clone(), pinned: blocking(move || p.pinned(&id, port)).await }
            }
            HostKeyCheck::Console { pins, console } => Expected::Instance {
                source: "console output",
                keys: console_keys(pins, console.as_ref(), host_id).await,
            },
            HostKeyCheck::Pinned(_) if !host_id.starts_with("i-") => Expected::Instance {
                source: "keys pinned at launch",
                keys: Err(format!(
                    "{host_id} is not an EC2 instance, and host_keys = \"pinned\" accepts only keys pinned while an instance launched; use host_keys = \"known-hosts\""
                )),
            },
            HostKeyCheck::Pinned(pins) => {
                let (p, id) = (pins.clone(), host_id.to_string());
                let keys = match blocking(move || p.instance_keys(&id, Some(KeySource::Lifecycle))).await {
                    Ok(k) if k.is_empty() => Err(format!(
                        "no host key was pinned for {host_id} while it launched; set [lifecycle] pin_host_keys = true (keys are pinned for instances launched after that), or use host_keys = \"console\""
                    )),
                    other => other.map_err(|e| format!("cannot read the pinned host keys: {e}")),
                };
                Expected::Instance { source: "keys pinned at launch", keys }
            }
        }
    }
}

/// The keys the store holds for the instance (from its console, read by a run or at launch); else
/// read from the console now and recorded.
async fn console_keys(
    pins: &Arc<dyn KeyPins>,
    console: &dyn ConsoleKeys,
    host_id: &str,
) -> Result<Vec<String>, String> {
    if !host_id.starts_with("i-") {
        return Err(format!(
            "{host_id} is not an EC2 instance, and host_keys = \"console\" reads an instance's console; use host_keys = \"known-hosts\""
        ));
    }
    let (p, id) = (pins.clone(), host_id.to_string());
    let known = blocking(move || p.instance_keys(&id, None))
        .await
        .map_err(|e| format!("cannot read the recorded host keys: {e}"))?;
    if !known.is_empty() {
        return Ok(known);
    }
    match console.host_keys(host_id).await? {
        None => Err(format!(
            "the console output of {host_id} has no SSH host key block, so its key cannot be verified; {NO_BLOCK_HELP}"
        )),
        Some(keys) => {
            let (p, id) = (pins.clone(), host_id.to_string());
            blocking(move || p.record_instance_keys(&id, &keys, KeySource::Console))
                .await
                .map_err(|e| format!("cannot record the host keys: {e}"))
        }
    }
}

impl Expected {
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let of = |keys: &[String]| {
            keys.iter().filter_map(|k| PublicKey::from_openssh(k).ok()).map(|k| k.algorithm()).collect()
        };
        match self {
            Expected::Listed { entries, .. } => entries.algorithms(),
            Expected::Pinned { pinned: Ok(Some(k)), .. } => of(std::slice::from_ref(k)),
            Expected::Pinned { .. } => Vec::new(),
            Expected::Instance { keys: Ok(keys), .. } => of(keys),
            Expected::Instance { .. } => Vec::new(),
        }
    }
}

/// The host-key policy, as russh's connection handler.
pub struct Checker {
    pub expected: Expected,
    pub host_id: String,
    pub address: String,
    pub port: u16,
    /// Why the key was refused, for the host's error message.
    pub verdict: Arc<Mutex<Option<String>>>,
}

impl Checker {
    async fn refusal(&self, key: &PublicKey) -> Option<String> {
        let offered = format!("{} {}", key.algorithm().as_str(), key.public_key_base64());
        match &self.expected {
            Expected::Listed { file, entries } => match entries.check(key) {
                Verdict::Trusted => None,
                Verdict::Mismatch { line } => Some(format!(
                    "host key mismatch: {}:{} presented {} but {}:{line} lists another key; if the host was rebuilt, update that line, otherwise investigate",
                    self.address,
                    self.port,
                    fingerprint(key),
                    file.display()
                )),
                Verdict::Revoked { line } => Some(format!("host key {} is revoked by {}:{line}", fingerprint(key), file.display())),
                Verdict::Unknown => Some(format!(
                    "unknown host key {} for {}:{}; add it to {} (e.g. with ssh-keyscan after verifying it), or use host_keys = \"tofu\"",
                    fingerprint(key),
                    self.address,
                    self.port,
                    file.display()
                )),
            },
            Expected::Pinned { pins, pinned } => {
                // First use: pin it. Another process may pin first; then its key is the one to match.
                let pinned = match pinned {
                    Ok(Some(k)) => Ok(k.clone()),
                    Ok(None) => {
                        let (p, id, addr, o) = (pins.clone(), self.host_id.clone(), self.address.clone(), offered.clone());
                        let port = self.port;
                        blocking(move || p.pin(&id, port, &addr, &o)).await
                    }
                    Err(e) => Err(e.clone()),
                };
                match pinned {
                    Ok(k) if k == offered => None,
                    Ok(k) => Some(format!(
                        "host key changed for {} ({}): pinned {} on first use, now offered {}; if the host was rebuilt, remove its pin: {}",
                        self.host_id,
                        self.address,
                        PublicKey::from_openssh(&k).map(|k| fingerprint(&k)).unwrap_or(k),
                        fingerprint(key),
                        pins.how_to_unpin(&self.host_id, self.port)
                    )),
                    Err(e) => Some(format!("cannot check the pinned host key: {e}")),
                }
            }
            Expected::Instance { keys: Err(why), .. } => Some(why.clone()),
            Expected::Instance { source, keys: Ok(keys) } => {
                if keys.iter().any(|k| k == &offered) {
                    None
                } else {
                    let listed: Vec<String> =
                        keys.iter().filter_map(|k| PublicKey::from_openssh(k).ok()).map(|k| fingerprint(&k)).collect();
                    Some(format!(
                        "host key mismatch: {} ({}:{}) presented {}, but its {source} lists {}; no command ran. If the instance was rebuilt in place, its keys changed: investigate before trusting it",
                        self.host_id,
                        self.address,
                        self.port,
                        fingerprint(key),
                        listed.join(", ")
                    ))
                }
            }
        }
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.verdict.lock().unwrap() =
                Some("the server presented a certificate; opsd checks plain host keys".into());
            return Ok(false);
        };
        match self.refusal(key).await {
            None => Ok(true),
            Some(why) => {
                *self.verdict.lock().unwrap() = Some(why);
                Ok(false)
            }
        }
    }
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(Default::default()).to_string()
}
