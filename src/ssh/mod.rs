//! The only russh user: TCP connect (TCP_NODELAY from the first byte), key exchange, host-key policy,
//! public-key auth, then each command on its own channel of one connection, with output caps, a
//! per-host deadline and cancellation. On timeout or cancellation the remote command is sent SIGKILL
//! (sshd delivers it to the session's process group) before the connection closes.

pub mod console;
mod guard;
pub mod instance_connect;
pub mod keys_command;
pub mod known_hosts;
pub mod pins;
mod reaper;
/// One shell word, single-quoted (what the host's `sh` reads back as exactly `s`).
pub use reaper::quote as shell_quote;
pub mod settings;
mod verify;

pub use console::ConsoleKeys;
pub use instance_connect::KeyPush;
use known_hosts::KnownHosts;
use russh::client::{self, AuthResult};
use russh::keys::ssh_key::{Algorithm, HashAlg};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, Preferred, Sig};
use serde::{Serialize, Serializer};
pub use settings::{Auth, AuthMethod, Defaults, HostKeyPolicy, Settings};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
pub use verify::{fingerprint, KeyPins};
use verify::{Checker, HostKeyCheck};

/// After a deadline or cancellation, how long opsd waits for the kill request and the disconnect to
/// be sent before dropping the connection: a stuck peer must not hold the run.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A silent command sends nothing for minutes; keepalives tell a live peer from one that vanished
/// (no RST) without an idle timeout: after KEEPALIVE_MAX unanswered ones (~2 min), the session ends.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_MAX: usize = 4;

/// Which stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives each kept piece of output as it arrives (the live view). Dropped bytes never reach it.
pub trait OutputSink: Sync {
    fn output(&self, stream: Stream, data: &[u8]) -> impl Future<Output = ()> + Send;
}

/// A sink that discards output (JSON mode, daemon).
pub struct NoSink;

impl OutputSink for NoSink {
    async fn output(&self, _: Stream, _: &[u8]) {}
}

/// Why a host's session did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// TCP connect or SSH handshake failed or took longer than connect_timeout.
    Connect,
    /// The server's host key is unknown, changed or revoked.
    HostKey,
    /// The server refused the key.
    Auth,
    /// The script's timeout ended the commands.
    Timeout,
    /// A command exited non-zero.
    CommandFailed,
    /// A command was killed by a signal.
    Signal,
    /// The SSH session broke in an unexpected way.
    Protocol,
    /// Cancelled (opsd is stopping).
    Cancelled,
}

/// One command on one host. Output is what was kept within the host's output_limit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandResult {
    pub command: String,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
    #[serde(serialize_with = "lossy")]
    pub stdout: Vec<u8>,
    #[serde(serialize_with = "lossy")]
    pub stderr: Vec<u8>,
}

fn lossy<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "cannot load the SSH identity {path}: {reason}; give an unencrypted OpenSSH private key in [ssh] identity_file"
    )]
    Identity { path: PathBuf, reason: String },
    #[error("the SSH identity {path} is readable by others (mode {mode:04o}); OpenSSH refuses such a key, and so does opsd: chmod 600 {path}")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("loading the SSH identity and known_hosts failed internally: {0}; this is a bug, please report it")]
    Internal(String),
    #[error("cannot read known_hosts {path}: {reason}; set [ssh] known_hosts in the config, or host_keys = \"tofu\" in the job")]
    KnownHosts { path: PathBuf, reason: String },
}

/// As OpenSSH's `sshkey_perm_ok`: a private key file of this user's that others may read or write
/// is refused (a key readable by another user is no longer this user's secret). A file owned by
/// another user (root's, shared through a group) is left to the file system's own checks.
fn private_key_file(path: &std::path::Path) -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt;
    let identity = |reason: String| SetupError::Identity { path: path.to_path_buf(), reason };
    let meta = std::fs::metadata(path).map_err(|e| identity(e.to_string()))?;
    // The process's effective uid, without libc: /proc/self belongs to it.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let mode = meta.mode() & 0o777;
    if Some(meta.uid()) == me && mode & 0o077 != 0 {
        return Err(SetupError::Exposed { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// What a run's connections need from outside SSH: the store's host keys, and AWS for
/// instance-connect auth and console host keys (`None` where the run does not use them).
#[derive(Clone)]
pub struct Services {
    pub pins: Arc<dyn KeyPins>,
    pub push: Option<Arc<dyn KeyPush>>,
    pub console: Option<Arc<dyn ConsoleKeys>>,
}

impl Services {
    /// The store's keys and AWS's, from one SDK config.
    pub fn with_aws(pins: Arc<dyn KeyPins>, sdk: &aws_config::SdkConfig) -> Services {
        Services {
            pins,
            push: Some(Arc::new(instance_connect::Aws::new(sdk))),
            console: Some(Arc::new(console::Aws(aws_sdk_ec2::Client::new(sdk)))),
        }
    }
}

/// How a run proves who it is.
enum Identity {
    /// A key file's private key, authorized on the hosts.
    File(Arc<PrivateKey>),
    /// The run's own key, pushed to each host just before connecting (EC2 Instance Connect).
    Pushed { key: Arc<PrivateKey>, public: String, push: Arc<dyn KeyPush> },
}

impl Identity {
    fn key(&self) -> &Arc<PrivateKey> {
        match self {
            Identity::File(k) | Identity::Pushed { key: k, .. } => k,
        }
    }
}

/// Everything needed to reach the hosts of one run, shared by all of them.
pub struct Connector {
    identity: Identity,
    user: String,
    port: u16,
    connect_timeout: Duration,
    check: HostKeyCheck,
}

/// What to run on each host.
pub struct Script<'a> {
    pub commands: &'a [String],
    /// Run after the commands, its bytes sent on the command's stdin ([`reaper::wrap_script`]).
    pub shipped: Option<Shipped<'a>>,
    /// Kept bytes per stream per host, across its commands.
    pub output_limit: u64,
    /// For all commands of one host.
    pub timeout: Duration,
}

/// A script shipped with the commands.
#[derive(Clone, Copy)]
pub struct Shipped<'a> {
    /// What runs on the host; it finds the script's file at `$OPSD_SCRIPT`.
    pub command: &'a str,
    /// How it shows in results and the history.
    pub display: &'a str,
    pub bytes: &'a [u8],
}

/// What one host's session produced.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub commands: Vec<CommandResult>,
    pub error: Option<(Failure, String)>,
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
}

impl Connector {
    /// [`Connector::new`] on a blocking thread: reading and indexing the files is file I/O and CPU
    /// work that must not hold a runtime thread.
    pub async fn load(settings: &Settings, services: Services) -> Result<Connector, SetupError> {
        let settings = settings.clone();
        match tokio::task::spawn_blocking(move || Connector::new(&settings, services)).await {
            Ok(r) => r,
            Err(e) => Err(SetupError::Internal(e.to_string())),
        }
    }

    /// Load the identity, or make the run's key (instance-connect, which needs `push`), and
    /// known_hosts if the run checks host keys against it, once for a whole run.
    pub fn new(settings: &Settings, services: Services) -> Result<Connector, SetupError> {
        let Services { pins, push, console } = services;
        let identity = match (&settings.auth, push) {
            (Auth::Key(file), _) => {
                private_key_file(file)?;
                let key = russh::keys::load_secret_key(file, None)
                    .map_err(|e| SetupError::Identity { path: file.clone(), reason: e.to_string() })?;
                Identity::File(Arc::new(key))
            }
            (Auth::InstanceConnect, Some(push)) => {
                let (key, public) = instance_connect::run_key().map_err(SetupError::Internal)?;
                Identity::Pushed { key: Arc::new(key), public, push }
            }
            (Auth::InstanceConnect, None) => {
                return Err(SetupError::Internal("instance-connect auth without an EC2 Instance Connect client".into()))
            }
        };
        let check = match settings.host_keys {
            HostKeyPolicy::KnownHosts => {
                let hosts = KnownHosts::load(&settings.known_hosts).map_err(|e| SetupError::KnownHosts {
                    path: settings.known_hosts.clone(),
                    reason: e.to_string(),
                })?;
                HostKeyCheck::KnownHosts { file: settings.known_hosts.clone(), hosts: Arc::new(hosts) }
            }
            HostKeyPolicy::Tofu => HostKeyCheck::Tofu(pins),
            HostKeyPolicy::Console => match console {
                Some(console) => HostKeyCheck::Console { pins, console },
                None => return Err(SetupError::Internal("host_keys = \"console\" without an EC2 client".into())),
            },
            HostKeyPolicy::Pinned => HostKeyCheck::Pinned(pins),
        };
        Ok(Connector {
            identity,
            user: settings.user.clone(),
            port: settings.port,
            connect_timeout: settings.connect_timeout,
            check,
        })
    }

    /// Connect to `address` (within `connect_timeout`), then run the script's commands in order until
    /// one fails (all within the script's timeout). `host_id` names the host for TOFU pins.
    pub async fn run<S: OutputSink>(
        &self,
        host_id: &str,
        address: &str,
        script: &Script<'_>,
        sink: &S,
        cancel: &CancellationToken,
    ) -> SessionOutcome {
        let mut out = SessionOutcome::default();
        let handle = tokio::select! {
            h = self.connect(host_id, address) => h,
            _ = cancel.cancelled() => Err((Failure::Cancelled, "cancelled before the connection was up".into())),
        };
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let deadline = Instant::now() + script.timeout;
        let mut caps = [Cap::new(script.output_limit), Cap::new(script.output_limit)];
        let plain = script.commands.iter().map(|c| Exec { display: c, request: reaper::wrap(c), stdin: None });
        let shipped = script.shipped.map(|s| Exec {
            display: s.display,
            request: reaper::wrap_script(s.command, s.bytes.len()),
            stdin: Some(s.bytes),
        });
        for command in plain.chain(shipped) {
            let (result, err) = exec(&handle, command, deadline, script.timeout, &mut caps, sink, cancel).await;
            let failed = err.is_some();
            out.commands.push(result);
            if let Some(e) = err {
                out.error = Some(e);
            }
            if failed {
                break;
            }
        }
        out.stdout_dropped = caps[0].dropped;
        out.stderr_dropped = caps[1].dropped;
        let _ = timeout(CLEANUP_TIMEOUT, handle.disconnect(russh::Disconnect::ByApplication, "", "en")).await;
        out
    }

    async fn connect(&self, host_id: &str, address: &str) -> Result<client::Handle<Checker>, (Failure, String)> {
        let deadline = Instant::now() + self.connect_timeout;
        // The run's key goes to the instance while the connection comes up: AWS keeps it 60 s, and
        // authentication follows within connect_timeout.
        let push = async {
            match &self.identity {
                Identity::File(_) => Ok(()),
                Identity::Pushed { public, push, .. } => {
                    if !host_id.starts_with("i-") {
                        return Err((
                            Failure::Auth,
                            format!("{address} has no EC2 instance id, and auth = \"instance-connect\" pushes the run's key to an instance by its id; give INSTANCE_ID ADDRESS in the hosts file, or use auth = \"key\""),
                        ));
                    }
                    match timeout_at(deadline, push.push(host_id, &self.user, public)).await {
                        Err(_) => Err(self.late(&format!("pushing the run's key to {host_id} (SendSSHPublicKey)"))),
                        Ok(r) => r.map_err(|m| (Failure::Auth, m)),
                    }
                }
            }
        };
        let (pushed, handshake) = tokio::join!(push, self.handshake(host_id, address, deadline));
        let (mut handle, disarm) = handshake?;
        pushed?;
        let identity = self.identity.key();
        let hash = if identity.algorithm().is_rsa() {
            timeout_at(deadline, handle.best_supported_rsa_hash()).await.ok().and_then(|r| r.ok()).flatten().flatten()
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(identity.clone(), hash);
        match timeout_at(deadline, handle.authenticate_publickey(self.user.clone(), key)).await {
            Err(_) => Err(self.late("authentication")),
            Ok(Err(e)) => Err((Failure::Auth, format!("authentication as {} failed: {e}", self.user))),
            Ok(Ok(AuthResult::Success)) => {
                disarm.disarm();
                Ok(handle)
            }
            Ok(Ok(AuthResult::Failure { .. })) => Err((Failure::Auth, self.refused())),
        }
    }

    /// Why the server refused the key, and what to check.
    fn refused(&self) -> String {
        match &self.identity {
            Identity::File(_) => format!(
                "the server refused the key for user {}; add the public key to the user's authorized_keys",
                self.user
            ),
            Identity::Pushed { .. } => format!(
                "the server refused the key pushed with EC2 Instance Connect for user {}; check that the instance runs the EC2 Instance Connect agent (package ec2-instance-connect, shipped by Amazon Linux 2/2023 and Ubuntu AMIs) and that {} is its OS user",
                self.user, self.user
            ),
        }
    }

    fn late(&self, what: &str) -> (Failure, String) {
        (
            Failure::Connect,
            format!("{what} took longer than connect_timeout ({})", humantime::format_duration(self.connect_timeout)),
        )
    }

    /// TCP connect and key exchange, with the host-key check, by `deadline`.
    async fn handshake(
        &self,
        host_id: &str,
        address: &str,
        deadline: Instant,
    ) -> Result<(client::Handle<Checker>, guard::Disarm), (Failure, String)> {
        let tcp = timeout_at(deadline, tokio::net::TcpStream::connect((address, self.port)))
            .await
            .map_err(|_| self.late("TCP connect"))?
            .map_err(|e| {
                let msg = format!("cannot connect to {address}:{}: {e}; check that sshd runs there and that security groups and firewalls let opsd in", self.port);
                (Failure::Connect, msg)
            })?;
        // Before the first byte: Nagle would delay the handshake's small packets by delayed-ACK stalls.
        let _ = tcp.set_nodelay(true);
        // The console output may be read here (host_keys = "console"): within connect_timeout too.
        let expected = timeout_at(deadline, self.check.expected(host_id, address, self.port))
            .await
            .map_err(|_| self.late(&format!("looking up the host key expected for {host_id}")))?;
        let config = Arc::new(client_config(&expected.algorithms()));
        let verdict = Arc::new(Mutex::new(None));
        let checker = Checker {
            expected,
            host_id: host_id.to_string(),
            address: address.to_string(),
            port: self.port,
            verdict: verdict.clone(),
        };
        let (tcp, disarm) = guard::GuardedStream::new(tcp, deadline);
        match timeout_at(deadline, client::connect_stream(config, tcp, checker)).await {
            Err(_) => Err(self.late("SSH handshake")),
            Ok(Ok(h)) => Ok((h, disarm)),
            Ok(Err(e)) => {
                if let Some(v) = verdict.lock().unwrap().take() {
                    return Err((Failure::HostKey, v));
                }
                Err((Failure::Connect, format!("SSH handshake with {address}:{} failed: {e}", self.port)))
            }
        }
    }
}

/// russh's client settings, asking first for the host key algorithms already known for the host.
fn client_config(known: &[Algorithm]) -> client::Config {
    let mut preferred = Preferred::default();
    if !known.is_empty() {
        let mut keys: Vec<Algorithm> = Vec::new();
        for a in known {
            match a {
                // An RSA host key signs with SHA-2 (SHA-1 `ssh-rsa` is disabled by current OpenSSH).
                Algorithm::Rsa { .. } => {
                    keys.push(Algorithm::Rsa { hash: Some(HashAlg::Sha512) });
                    keys.push(Algorithm::Rsa { hash: Some(HashAlg::Sha256) });
                }
                a => keys.push(a.clone()),
            }
        }
        for a in Preferred::default().key.iter() {
            if !keys.contains(a) {
                keys.push(a.clone());
            }
        }
        preferred.key = keys.into();
    }
    client::Config {
        preferred,
        // Commands run to completion; the per-host deadline, not an idle timer, bounds them.
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..Default::default()
    }
}

/// The output budget of one stream of one host, shared by its commands.
struct Cap {
    remaining: u64,
    dropped: u64,
}

impl Cap {
    fn new(limit: u64) -> Cap {
        Cap { remaining: limit, dropped: 0 }
    }

    /// Keep what fits in `buf`; count the rest. Returns the kept part.
    fn take<'a>(&mut self, data: &'a [u8], buf: &mut Vec<u8>) -> &'a [u8] {
        let keep = (data.len() as u64).min(self.remaining) as usize;
        self.remaining -= keep as u64;
        self.dropped += (data.len() - keep) as u64;
        buf.extend_from_slice(&data[..keep]);
        &data[..keep]
    }
}

fn timed_out(run_timeout: Duration) -> String {
    format!(
        "timed out after {} (run.timeout, for all commands of a host); raise it if the commands need longer",
        humantime::format_duration(run_timeout)
    )
}

/// Close the channel's stdin, so the wrapper ends the command's process group, and wait (at most
/// [`reaper::REAP_TIMEOUT`]) for its report on stderr. Output after the give-up is not kept.
async fn reap(ch: &mut russh::Channel<client::Msg>) -> Option<reaper::Reaped> {
    if timeout(CLEANUP_TIMEOUT, ch.eof()).await.is_err() {
        return None;
    }
    let wait = async {
        let mut err = Vec::new();
        loop {
            match ch.wait().await {
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    err.extend_from_slice(&data);
                    if let Some(r) = reaper::report(&err) {
                        return Some(r);
                    }
                    // Only the tail matters: the report is one short line.
                    let keep = err.len().saturating_sub(64);
                    err.drain(..keep);
                }
                Some(ChannelMsg::Close) | None => return None,
                Some(_) => {}
            }
        }
    };
    timeout(reaper::REAP_TIMEOUT, wait).await.ok().flatten()
}

/// Run one command on its own channel; `Some(error)` when it did not succeed.
/// One exec request on its own channel.
struct Exec<'a> {
    /// The command as recorded.
    display: &'a str,
    /// The exec request (the command in the reaper's wrapper).
    request: String,
    /// Sent first on the channel's stdin (a shipped script), which then stays open.
    stdin: Option<&'a [u8]>,
}

async fn exec<S: OutputSink>(
    handle: &client::Handle<Checker>,
    command: Exec<'_>,
    deadline: Instant,
    run_timeout: Duration,
    caps: &mut [Cap; 2],
    sink: &S,
    cancel: &CancellationToken,
) -> (CommandResult, Option<(Failure, String)>) {
    let mut r = CommandResult { command: command.display.to_string(), ..Default::default() };
    let opened = tokio::select! {
        c = timeout_at(deadline, handle.channel_open_session()) => c,
        _ = cancel.cancelled() => return (r, Some((Failure::Cancelled, "cancelled".into()))),
    };
    let mut ch = match opened {
        Err(_) => return (r, Some((Failure::Timeout, timed_out(run_timeout)))),
        Ok(Err(e)) => return (r, Some((Failure::Protocol, format!("cannot open a session channel: {e}")))),
        Ok(Ok(c)) => c,
    };
    match timeout_at(deadline, ch.exec(true, command.request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return (r, Some((Failure::Protocol, format!("cannot start the command: {e}")))),
        Err(_) => return (r, Some((Failure::Timeout, timed_out(run_timeout)))),
    }
    if let Some(bytes) = command.stdin {
        let sent = tokio::select! {
            s = timeout_at(deadline, ch.data(bytes)) => s,
            _ = cancel.cancelled() => return (r, Some((Failure::Cancelled, "cancelled while sending the script".into()))),
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (r, Some((Failure::Protocol, format!("cannot send the script: {e}")))),
            Err(_) => return (r, Some((Failure::Timeout, timed_out(run_timeout)))),
        }
    }
    // The deadline and cancellation are watched at every await, including a slow live view. Both
    // futures are made once per command and polled by reference: no new timer per output chunk.
    let expired = tokio::time::sleep_until(deadline);
    let cancelled = cancel.cancelled();
    tokio::pin!(expired, cancelled);
    let timed_out_msg = || timed_out(run_timeout);
    let cancelled_msg = || "cancelled by shutdown".to_string();
    let stop = loop {
        let msg = tokio::select! {
            m = ch.wait() => m,
            _ = &mut expired => break Some((Failure::Timeout, timed_out_msg())),
            _ = &mut cancelled => break Some((Failure::Cancelled, cancelled_msg())),
        };
        let (stream, kept) = match &msg {
            Some(ChannelMsg::Data { data }) => (Stream::Stdout, caps[0].take(data, &mut r.stdout)),
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => (Stream::Stderr, caps[1].take(data, &mut r.stderr)),
            _ => (Stream::Stdout, &[][..]),
        };
        if !kept.is_empty() {
            tokio::select! {
                _ = sink.output(stream, kept) => {}
                _ = &mut expired => break Some((Failure::Timeout, timed_out_msg())),
                _ = &mut cancelled => break Some((Failure::Cancelled, cancelled_msg())),
            }
        }
        match msg {
            Some(ChannelMsg::Data { .. }) | Some(ChannelMsg::ExtendedData { .. }) => {}
            Some(ChannelMsg::ExitStatus { exit_status }) => r.exit_status = Some(exit_status),
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => r.exit_signal = Some(format!("{signal_name:?}")),
            Some(ChannelMsg::Failure) => {
                break Some((Failure::Protocol, "the server refused to run the command".into()))
            }
            Some(ChannelMsg::Close) | None => break None,
            Some(_) => {}
        }
    };
    if let Some((kind, why)) = stop {
        // End the command's whole process group (the wrapper does, once stdin closes), so nothing
        // outlives the run, and say whether that was confirmed.
        let ended = reap(&mut ch).await;
        let why = match ended {
            Some(reaper::Reaped::Ended) => format!("{why}; the command and its processes were ended"),
            Some(reaper::Reaped::Remain) => format!(
                "{why}; kill requested, not confirmed: processes of the command remain on the host (under another user, e.g. sudo, which opsd cannot signal)"
            ),
            None => format!(
                "{why}; kill requested, not confirmed: the host did not say within {:?} that the command's processes ended",
                reaper::REAP_TIMEOUT
            ),
        };
        if ended != Some(reaper::Reaped::Ended) {
            // A host that ran the command without the wrapper: sshd's signal, as a last resort.
            let _ = timeout(CLEANUP_TIMEOUT, ch.signal(Sig::KILL)).await;
        }
        let _ = timeout(CLEANUP_TIMEOUT, ch.close()).await;
        return (r, Some((kind, why)));
    }
    let err = match (r.exit_status, &r.exit_signal) {
        (Some(0), _) => None,
        (Some(n), _) => Some((Failure::CommandFailed, format!("command {:?} exited with status {n}", r.command))),
        (None, Some(sig)) => Some((Failure::Signal, format!("command {:?} was killed by signal {sig}", r.command))),
        (None, None) => Some((Failure::Protocol, format!("command {:?} ended without an exit status", r.command))),
    };
    (r, err)
}
