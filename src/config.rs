//! The daemon config (`/etc/opsd/opsd.toml`, `--config`, `OPSD_CONFIG`), with `OPSD_…` environment
//! overrides layered on by the `config` crate (`OPSD_SSH__USER=ec2-user`, `OPSD_JOBS_DIR=…`).
//! Parsed into validated types at load; `opsd validate` and every command use this same path.

use crate::aws::AwsSettings;
use crate::capacity::settings::CapacitySettings;
use crate::cluster::ClusterSettings;
use crate::diag::{Diagnostic, Invalid};
use crate::jobs::settings::{JobDefaults, RunDefaults};
use crate::lifecycle::settings::LifecycleSettings;
use crate::logging::LogFormat;
use crate::ssh;
use crate::units::{HumanDuration, Retention};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config is read from when neither `--config` nor `OPSD_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/opsd/opsd.toml";

/// The whole config: the daemon's own keys, and one section per wing and edge, each section's
/// type (with its defaults and checks) owned by the module it configures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of job files (`*.toml`); relative paths are taken from the config file's directory.
    pub jobs_dir: PathBuf,
    /// Directory for the run history and TOFU host-key pins (systemd's StateDirectory).
    pub state_dir: PathBuf,
    pub aws: AwsSettings,
    pub ssh: ssh::Defaults,
    pub run: RunDefaults,
    /// `opsd daemon`: how long running jobs may finish after SIGTERM before they are cancelled.
    /// Under systemd the stop timeout follows it (EXTEND_TIMEOUT_USEC = grace + 60 s at STOPPING=1).
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
    /// `opsd daemon`: the capacity controller for an ECS cluster; off when absent.
    pub capacity: Option<CapacitySettings>,
    /// Several daemons acting as one through a DynamoDB table; alone when absent.
    pub cluster: Option<ClusterSettings>,
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
            ssh: ssh::Defaults::default(),
            run: RunDefaults::default(),
            shutdown_grace: HumanDuration(Duration::from_secs(60)),
            history_retention: Retention(Duration::from_secs(30 * 86400)),
            log_format: LogFormat::Text,
            metrics_listen: None,
            lifecycle: None,
            capacity: None,
            cluster: None,
            source: None,
        }
    }
}

impl Config {
    /// What a job file's missing values are taken from.
    pub fn job_defaults(&self) -> JobDefaults {
        JobDefaults { ssh: self.ssh.clone(), run: self.run.clone() }
    }

    /// The file's name for messages: its path, or that the built-in defaults are in use.
    pub fn name(&self) -> String {
        self.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into())
    }

    /// What the sections' types cannot say by themselves, each with the section's key.
    fn invalid(&self) -> Vec<(&'static str, Invalid)> {
        let mut all: Vec<(&'static str, Invalid)> = Vec::new();
        all.extend(self.capacity.iter().flat_map(|c| c.check()).map(|i| ("capacity", i)));
        all.extend(self.aws.check().into_iter().map(|i| ("aws", i)));
        all.extend(self.cluster.iter().flat_map(|c| c.check()).map(|i| ("cluster", i)));
        all
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
    "cluster__",
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
        // Every setting that parsed but is not valid with the others, all at once, located.
        let invalid: Vec<Diagnostic> = cfg
            .invalid()
            .into_iter()
            .map(|(section, i)| {
                let field = if i.key.is_empty() { section.to_string() } else { format!("{section}.{}", i.key) };
                Diagnostic::field(&shown, &text, &field, i.message)
            })
            .collect();
        if !invalid.is_empty() {
            return Err(invalid);
        }
        cfg.source = file;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::fleet::CapacityTarget;
    use crate::lifecycle::settings::{DeviceIndex, Workers};
    use crate::units::Limit;

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
    fn cluster_section() {
        let (_d, p) = write("[cluster]\ntable = \"opsd-prod\"\nreplica = \"a\"\n");
        let c = Config::load_with_env(Some(&p), &[]).unwrap().cluster.unwrap();
        assert_eq!((c.table.as_str(), c.replica().as_str()), ("opsd-prod", "a"));
        assert_eq!((c.heartbeat_interval.0, c.member_timeout.0), (Duration::from_secs(5), Duration::from_secs(30)));
        let (_d, p) = write("[cluster]\ntable = \"x\"\nheartbeat_interval = \"10s\"\nmember_timeout = \"20s\"\n");
        let fields: Vec<String> =
            Config::load_with_env(Some(&p), &[]).unwrap_err().into_iter().map(|d| d.field).collect();
        assert_eq!(fields, ["cluster.table", "cluster.member_timeout"]);
        // With a capacity controller: one replica at a time leads it.
        let (_d, p) = write(
            "[cluster]\ntable = \"opsd-prod\"\nleader_lease = \"2s\"\n[capacity]\ncluster = \"c\"\nfleet_id = \"f\"\nmax_capacity = 2\n",
        );
        let e = Config::load_with_env(Some(&p), &[]).unwrap_err();
        assert_eq!(e[0].field, "cluster.leader_lease", "{e:?}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        assert!(Config::load_with_env(Some(Path::new("/nonexistent/opsd.toml")), &[]).is_err());
    }
}
