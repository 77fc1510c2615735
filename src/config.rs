//! The daemon config (`/etc/opsd/opsd.toml`, `--config`, `OPSD_CONFIG`), with `OPSD_…` environment
//! overrides layered on by the `config` crate (`OPSD_SSH__USER=ec2-user`, `OPSD_JOBS_DIR=…`).
//! Parsed into validated types at load; `opsd validate` and every command use this same path.

use crate::diag::Diagnostic;
use crate::job::units::{ByteSize, DurationOrOff, HumanDuration, Limit, Retention};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config is read from when neither `--config` nor `OPSD_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/opsd/opsd.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of job files (`*.toml`); relative paths are taken from the config file's directory.
    pub jobs_dir: PathBuf,
    /// Directory for the run history and TOFU host-key pins (systemd's StateDirectory).
    pub state_dir: PathBuf,
    pub aws: AwsSettings,
    pub ssh: SshDefaults,
    pub run: RunDefaults,
    /// `opsd daemon`: how long running jobs may finish after SIGTERM before they are cancelled.
    /// Keep it below the unit's TimeoutStopSec (90 s in systemd/opsd.service).
    pub shutdown_grace: HumanDuration,
    /// `opsd daemon`: run history (with its output), lifecycle actions and capacity decisions older
    /// than this are deleted, at start and hourly; each job's latest run and firings are kept.
    pub history_retention: Retention,
    /// `opsd daemon`'s log lines: `text` (human) or `json` (one object per line, for shippers).
    pub log_format: LogFormat,
    /// `opsd daemon`'s Prometheus endpoint (`GET /metrics`), e.g. "127.0.0.1:9464"; off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `opsd daemon`: the Auto Scaling lifecycle-hook consumer (secondary ENIs); off when absent.
    pub lifecycle: Option<LifecycleSettings>,
    /// `opsd daemon`: the Spot Fleet capacity controller for an ECS cluster; off when absent.
    pub capacity: Option<CapacitySettings>,
    /// The file this config came from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            jobs_dir: PathBuf::from("/etc/opsd/jobs"),
            state_dir: PathBuf::from("/var/lib/opsd"),
            aws: AwsSettings::default(),
            ssh: SshDefaults::default(),
            run: RunDefaults::default(),
            shutdown_grace: HumanDuration(Duration::from_secs(60)),
            history_retention: Retention(Duration::from_secs(30 * 86400)),
            log_format: LogFormat::Text,
            metrics_listen: None,
            lifecycle: None,
            capacity: None,
            source: None,
        }
    }
}

/// `[lifecycle]`: where lifecycle notifications arrive and how they are worked.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// The SQS queue the hooks notify (directly, through SNS or through EventBridge).
    pub queue_url: String,
    /// Messages worked at once.
    #[serde(default = "default_workers")]
    pub workers: Workers,
    /// How long a received message stays invisible before heartbeats extend it.
    #[serde(default = "default_visibility")]
    pub visibility_timeout: HumanDuration,
    /// How often opsd looks for interfaces it created that were left unattached.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: HumanDuration,
    /// An unattached opsd interface whose instance is gone is deleted after this long.
    #[serde(default = "default_sweep_grace")]
    pub sweep_grace: HumanDuration,
    #[serde(default)]
    pub eni: EniSettings,
}

/// `[capacity]`: keep an ECS cluster's reservation near a target with its Spot Fleet's capacity.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapacitySettings {
    pub cluster: String,
    /// What provides the cluster's instances: exactly one of these.
    pub spot_fleet_request_id: Option<String>,
    pub auto_scaling_group: Option<String>,
    /// An EC2 Fleet of type maintain (ModifyFleet).
    pub fleet_id: Option<String>,
    /// Percent: the larger of CPU and memory reservation is held near it.
    #[serde(default = "default_target_reservation")]
    pub target_reservation: Percent,
    /// In the fleet's capacity units (weighted capacity is honoured).
    #[serde(default = "default_min_capacity")]
    pub min_capacity: u32,
    pub max_capacity: u32,
    #[serde(default = "default_out_step")]
    pub max_scale_out_step: u32,
    #[serde(default = "default_in_step")]
    pub max_scale_in_step: u32,
    #[serde(default = "default_out_cooldown")]
    pub scale_out_cooldown: HumanDuration,
    #[serde(default = "default_in_cooldown")]
    pub scale_in_cooldown: HumanDuration,
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long new capacity takes to take tasks (launch, boot, ECS agent registration): demand
    /// that keeps rising is projected this far ahead. "0s" turns the look-ahead off.
    #[serde(default = "default_lead_time")]
    pub lead_time: DurationOrOff,
    /// Drain the chosen container instances before terminating them (their tasks move first).
    #[serde(default = "default_true")]
    pub drain_before_scale_in: bool,
    /// How long a drain may take before the scale-in is given up (the instances are set ACTIVE again).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: HumanDuration,
    /// Decide and log, never act.
    #[serde(default)]
    pub dry_run: bool,
}

/// What the capacity controller moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityTarget {
    /// ModifySpotFleetRequest on its TargetCapacity.
    SpotFleet(String),
    /// SetDesiredCapacity; scale-in by TerminateInstanceInAutoScalingGroup.
    AutoScalingGroup(String),
    /// ModifyFleet on its TotalTargetCapacity.
    Ec2Fleet(String),
}

impl std::fmt::Display for CapacityTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapacityTarget::SpotFleet(id) => write!(f, "Spot Fleet request {id}"),
            CapacityTarget::AutoScalingGroup(name) => write!(f, "Auto Scaling group {name}"),
            CapacityTarget::Ec2Fleet(id) => write!(f, "EC2 Fleet {id}"),
        }
    }
}

impl CapacitySettings {
    /// The one capacity target the section names (validated at load).
    pub fn target(&self) -> CapacityTarget {
        match (&self.spot_fleet_request_id, &self.auto_scaling_group, &self.fleet_id) {
            (Some(id), _, _) => CapacityTarget::SpotFleet(id.clone()),
            (None, Some(name), _) => CapacityTarget::AutoScalingGroup(name.clone()),
            (None, None, Some(id)) => CapacityTarget::Ec2Fleet(id.clone()),
            (None, None, None) => CapacityTarget::SpotFleet(String::new()),
        }
    }

    fn check_target(&self) -> Result<(), String> {
        let given = [&self.spot_fleet_request_id, &self.auto_scaling_group, &self.fleet_id]
            .iter()
            .filter(|t| t.is_some())
            .count();
        match given {
            1 => Ok(()),
            0 => Err("no capacity to move; set spot_fleet_request_id = \"sfr-…\", fleet_id = \"fleet-…\" or auto_scaling_group = \"…\"".into()),
            _ => Err("give one of spot_fleet_request_id, fleet_id and auto_scaling_group, not several".into()),
        }
    }
}

/// A percentage in (0, 100].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = f64::deserialize(d)?;
        if !(n > 0.0 && n <= 100.0) {
            return Err(serde::de::Error::custom(format!("{n}: use a percentage above 0 and at most 100, like 80")));
        }
        Ok(Percent(n))
    }
}

fn default_target_reservation() -> Percent {
    Percent(80.0)
}
fn default_min_capacity() -> u32 {
    1
}
fn default_out_step() -> u32 {
    10
}
fn default_in_step() -> u32 {
    2
}
fn default_out_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_in_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_lead_time() -> DurationOrOff {
    DurationOrOff(Duration::from_secs(180))
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_true() -> bool {
    true
}
fn default_drain_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// `[lifecycle.eni]`: the interface each launching instance gets (NotificationMetadata may override
/// the subnets and security groups per hook).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EniSettings {
    /// One subnet per Availability Zone: the interface goes in the one of the instance's zone.
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub device_index: DeviceIndex,
    pub description: String,
    /// How long a new interface may take to become `available`.
    pub ready_timeout: HumanDuration,
}

impl Default for EniSettings {
    fn default() -> Self {
        EniSettings {
            subnets: Vec::new(),
            security_groups: Vec::new(),
            device_index: DeviceIndex(1),
            description: "opsd admin interface".into(),
            ready_timeout: HumanDuration(Duration::from_secs(120)),
        }
    }
}

/// Worker count, 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers(pub usize);

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if !(1..=100).contains(&n) {
            return Err(serde::de::Error::custom(format!("{n} workers: use 1 to 100 (16 suits most queues)")));
        }
        Ok(Workers(n as usize))
    }
}

/// A secondary interface's device index, 1..=31 (0 is the primary interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIndex(pub i32);

impl<'de> Deserialize<'de> for DeviceIndex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=31).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "device index {n}: use 1 to 31 (0 is the instance's primary interface)"
            )));
        }
        Ok(DeviceIndex(n as i32))
    }
}

fn default_workers() -> Workers {
    Workers(16)
}

fn default_visibility() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_sweep_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_sweep_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(1800))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// AWS settings; anything unset falls back to the SDK's standard chain (env, profile, instance role),
/// and endpoints to `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_EC2`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// DescribeInstances page size (MaxResults, 5..=1000): the largest page means the fewest calls.
    pub page_size: u16,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings { region: None, profile: None, page_size: 1000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshDefaults {
    pub user: Option<String>,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub connect_timeout: HumanDuration,
}

/// Long enough for a TCP connect, key exchange and authentication across regions on a loaded host;
/// short enough that one dead host does not hold a run for long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for SshDefaults {
    fn default() -> Self {
        SshDefaults {
            user: None,
            port: 22,
            identity_file: None,
            known_hosts: PathBuf::from("/etc/opsd/known_hosts"),
            connect_timeout: HumanDuration(DEFAULT_CONNECT_TIMEOUT),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunDefaults {
    pub timeout: HumanDuration,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    pub output_limit: ByteSize,
}

impl Default for RunDefaults {
    fn default() -> Self {
        RunDefaults {
            // Per host, all commands: maintenance commands finish in minutes; a hung one must not hold a run.
            timeout: HumanDuration(Duration::from_secs(300)),
            // sshd-side CPU, not opsd, is the limit of a fan-out: 50 keeps a small fleet host responsive.
            max_concurrency: Limit::Count(50),
            // Stop widening a run once a tenth of the fleet has failed: a bad command stays contained.
            max_errors: Limit::Percent(10.0),
            // Enough for a useful log tail per stream; bounded memory at any concurrency.
            output_limit: ByteSize(64 * 1024),
        }
    }
}

/// Keys that `OPSD_…` variables may set; other `OPSD_` variables (OPSD_CONFIG, OPSD_LOG) are not config.
const ENV_KEYS: &[&str] = &[
    "jobs_dir",
    "state_dir",
    "shutdown_grace",
    "history_retention",
    "log_format",
    "metrics_listen",
    "aws__",
    "ssh__",
    "run__",
    "lifecycle__",
    "capacity__",
];

impl Config {
    /// Load the config from `path` (or the default path when it exists), then apply `OPSD_…` overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, Vec<Diagnostic>> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    pub fn load_with_env(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, Vec<Diagnostic>> {
        let (file, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    vec![Diagnostic::file(
                        p,
                        format!("cannot read the config: {e}; fix the path given by --config or OPSD_CONFIG"),
                    )]
                })?;
                (Some(p.to_path_buf()), text)
            }
            None => match std::fs::read_to_string(DEFAULT_CONFIG_PATH) {
                Ok(t) => (Some(PathBuf::from(DEFAULT_CONFIG_PATH)), t),
                Err(_) => (None, String::new()),
            },
        };
        let shown = file.clone().unwrap_or_else(|| PathBuf::from("<defaults>"));
        // First pass: the file alone, so its errors carry line and column.
        let _: Config = crate::tomlfile::parse(&shown, &text)?;
        // Second pass: the file with the environment layered on top.
        let overrides: config::Map<String, String> = env
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("OPSD_")?.to_ascii_lowercase();
                ENV_KEYS
                    .iter()
                    .any(|p| rest == *p || (p.ends_with("__") && rest.starts_with(p)))
                    .then(|| (k.clone(), v.clone()))
            })
            .collect();
        let mut cfg: Config = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("OPSD")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| {
                vec![Diagnostic::file(
                    &shown,
                    format!("with OPSD_… environment overrides: {e}; fix the variable or unset it"),
                )]
            })?;
        if let Some(f) = &file {
            let base = f.parent().unwrap_or(Path::new("."));
            for p in [&mut cfg.jobs_dir, &mut cfg.state_dir, &mut cfg.ssh.known_hosts] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            if let Some(p) = cfg.ssh.identity_file.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        }
        if let Some(c) = &cfg.capacity {
            if let Err(msg) = c.check_target() {
                return Err(vec![Diagnostic::field(&shown, &text, "capacity", msg)]);
            }
            if c.min_capacity > c.max_capacity {
                let msg = format!("min_capacity {} is above max_capacity {}; lower it", c.min_capacity, c.max_capacity);
                return Err(vec![Diagnostic::field(&shown, &text, "capacity.min_capacity", msg)]);
            }
        }
        if !(5..=1000).contains(&cfg.aws.page_size) {
            let msg = format!(
                "{} is outside DescribeInstances' 5..=1000; use 1000 unless AWS throttles you",
                cfg.aws.page_size
            );
            return Err(vec![Diagnostic::field(&shown, &text, "aws.page_size", msg)]);
        }
        cfg.source = file;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("opsd.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn file_values_and_relative_paths() {
        let (d, p) = write("jobs_dir = \"jobs\"\n[ssh]\nuser = \"admin\"\nport = 2222\n[run]\nmax_errors = 3\n");
        let c = Config::load_with_env(Some(&p), &[]).unwrap();
        assert_eq!(c.jobs_dir, d.path().join("jobs"));
        assert_eq!(c.ssh.user.as_deref(), Some("admin"));
        assert_eq!(c.ssh.port, 2222);
        assert_eq!(c.run.max_errors, Limit::Count(3));
        assert_eq!(c.run.max_concurrency, Limit::Count(50));
    }

    #[test]
    fn environment_overrides_the_file() {
        let (_d, p) = write("[ssh]\nuser = \"admin\"\n");
        let env = vec![
            ("OPSD_SSH__USER".to_string(), "ec2-user".to_string()),
            ("OPSD_RUN__MAX_CONCURRENCY".to_string(), "20%".to_string()),
            ("OPSD_SSH__PORT".to_string(), "2200".to_string()),
            ("OPSD_METRICS_LISTEN".to_string(), "127.0.0.1:9464".to_string()),
            ("OPSD_LOG_FORMAT".to_string(), "json".to_string()),
            ("OPSD_CONFIG".to_string(), "/ignored".to_string()),
            ("OPSD_SANDBOX_DIR".to_string(), "/ignored".to_string()),
        ];
        let c = Config::load_with_env(Some(&p), &env).unwrap();
        assert_eq!(c.ssh.user.as_deref(), Some("ec2-user"));
        assert_eq!(c.ssh.port, 2200);
        assert_eq!(c.run.max_concurrency, Limit::Percent(20.0));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_file_is_located() {
        let (_d, p) = write("[ssh]\nuser = \"a\"\nconect_timeout = \"5s\"\n");
        let e = Config::load_with_env(Some(&p), &[]).unwrap_err().remove(0);
        assert_eq!((e.line, e.field.as_str()), (3, "ssh.conect_timeout"), "{e}");
        let (_d, p) = write("[run]\ntimeout = \"soon\"\n");
        let e = Config::load_with_env(Some(&p), &[]).unwrap_err().remove(0);
        assert_eq!((e.line, e.col, e.field.as_str()), (2, 11, "run.timeout"), "{e}");
    }

    #[test]
    fn history_retention() {
        let (_d, p) = write("");
        let c = Config::load_with_env(Some(&p), &[]).unwrap();
        assert_eq!(c.history_retention.0, Duration::from_secs(30 * 86400));
        let (_d, p) = write("jobs_dir = \"j\"\nhistory_retention = \"0s\"\n");
        let e = Config::load_with_env(Some(&p), &[]).unwrap_err().remove(0);
        assert_eq!((e.line, e.field.as_str()), (2, "history_retention"), "{e}");
        let (_d, p) = write("history_retention = \"400days\"\n");
        let c = Config::load_with_env(Some(&p), &[]).unwrap();
        assert_eq!(c.history_retention.0, Duration::from_secs(400 * 86400));
    }

    #[test]
    fn bad_environment_value_is_named() {
        let (_d, p) = write("");
        let env = vec![("OPSD_RUN__TIMEOUT".to_string(), "soon".to_string())];
        let e = Config::load_with_env(Some(&p), &env).unwrap_err().remove(0);
        assert!(e.message.contains("soon") || e.message.contains("timeout"), "{e}");
    }

    #[test]
    fn lifecycle_section() {
        let (_d, p) = write("[lifecycle]\nqueue_url = \"http://q\"\n[lifecycle.eni]\nsubnets = [\"subnet-a\"]\n");
        let c = Config::load_with_env(Some(&p), &[]).unwrap();
        let l = c.lifecycle.unwrap();
        assert_eq!((l.queue_url.as_str(), l.workers, l.eni.device_index), ("http://q", Workers(16), DeviceIndex(1)));
        assert_eq!(l.eni.subnets, ["subnet-a"]);
        assert_eq!(l.eni.ready_timeout.0, Duration::from_secs(120));
        let (_d, p) = write("[lifecycle]\nqueue_url = \"q\"\nworkers = 0\n[lifecycle.eni]\ndevice_index = 0\n");
        let e = Config::load_with_env(Some(&p), &[]).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["lifecycle.workers", "lifecycle.eni.device_index"], "{e:?}");
        let (_d, p) = write("[lifecycle]\nworkers = 4\n");
        let e = Config::load_with_env(Some(&p), &[]).unwrap_err();
        assert!(e[0].message.contains("queue_url"), "{e:?}");
    }

    #[test]
    fn capacity_names_exactly_one_target() {
        let base = "[capacity]\ncluster = \"c\"\nmax_capacity = 4\n";
        for (extra, want) in [
            ("spot_fleet_request_id = \"sfr-1\"\n", Some(CapacityTarget::SpotFleet("sfr-1".into()))),
            ("fleet_id = \"fleet-1\"\n", Some(CapacityTarget::Ec2Fleet("fleet-1".into()))),
            ("auto_scaling_group = \"g\"\n", Some(CapacityTarget::AutoScalingGroup("g".into()))),
            ("", None),
            ("fleet_id = \"fleet-1\"\nauto_scaling_group = \"g\"\n", None),
        ] {
            let (_d, p) = write(&format!("{base}{extra}"));
            match (Config::load_with_env(Some(&p), &[]), want) {
                (Ok(c), Some(w)) => assert_eq!(c.capacity.unwrap().target(), w),
                (Err(e), None) => assert_eq!(e[0].field, "capacity", "{e:?}"),
                (r, w) => panic!("{extra:?}: got {:?}, wanted {w:?}", r.map(|c| c.capacity.map(|c| c.target()))),
            }
        }
        let (_d, p) = write(&format!("{base}fleet_id = \"f\"\nmin_capacity = 5\n"));
        let e = Config::load_with_env(Some(&p), &[]).unwrap_err();
        assert_eq!(e[0].field, "capacity.min_capacity", "{e:?}");
        // lead_time: 3 minutes unless set; "0s" turns the look-ahead off (other durations must be positive).
        let (_d, p) = write(&format!("{base}fleet_id = \"f\"\n"));
        assert_eq!(
            Config::load_with_env(Some(&p), &[]).unwrap().capacity.unwrap().lead_time.0,
            Duration::from_secs(180)
        );
        let (_d, p) = write(&format!("{base}fleet_id = \"f\"\nlead_time = \"0s\"\n"));
        assert_eq!(Config::load_with_env(Some(&p), &[]).unwrap().capacity.unwrap().lead_time.0, Duration::ZERO);
        let (_d, p) = write(&format!("{base}fleet_id = \"f\"\ninterval = \"0s\"\n"));
        assert_eq!(Config::load_with_env(Some(&p), &[]).unwrap_err()[0].field, "capacity.interval");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        assert!(Config::load_with_env(Some(Path::new("/nonexistent/opsd.toml")), &[]).is_err());
    }
}
