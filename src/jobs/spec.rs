//! Job files (`jobs/*.toml`): the spec as written, its resolution against the config's defaults, and
//! loading with `file:line:col: field: message` errors. A job's name is its file stem.

use super::schedule::{Overlap, Schedule, TimeZone, Timing};
use super::script::ScriptSpec;
use super::settings::JobDefaults;
use super::target::{AddressKind, InstanceState, Tags, Target};
use crate::diag::Diagnostic;
use crate::ssh::{self, AuthMethod, HostKeyPolicy};
use crate::units::{ByteSize, HumanDuration, Limit};
use serde::{de, Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A job file as written. Unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[serde(default)]
    pub description: String,
    pub schedule: Option<Schedule>,
    pub timezone: Option<TimeZone>,
    pub jitter: Option<HumanDuration>,
    pub overlap: Option<Overlap>,
    pub catch_up: Option<bool>,
    pub target: TargetSpec,
    #[serde(default)]
    pub ssh: SshSpec,
    pub run: RunSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub tags: Tags,
    #[serde(default = "default_states")]
    pub states: Vec<InstanceState>,
    #[serde(default)]
    pub address: AddressKind,
}

fn default_states() -> Vec<InstanceState> {
    vec![InstanceState::Running]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub auth: Option<AuthMethod>,
    pub host_keys: Option<HostKeyPolicy>,
    pub connect_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub commands: Option<Commands>,
    /// A file beside the job (relative to the job file), shipped to each host and run after the
    /// commands.
    pub script: Option<PathBuf>,
    pub args: Option<Vec<String>>,
    pub timeout: Option<HumanDuration>,
    pub max_concurrency: Option<Limit>,
    pub max_errors: Option<Limit>,
    pub output_limit: Option<ByteSize>,
}

/// The commands of a job: at least one, none empty.
#[derive(Debug, Clone)]
pub struct Commands(pub Vec<String>);

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        if v.is_empty() {
            return Err(de::Error::custom("no commands; give at least one, like commands = [\"uptime\"]"));
        }
        if let Some(i) = v.iter().position(|c| c.trim().is_empty()) {
            return Err(de::Error::custom(format!("command {} is empty; remove it or write the command", i + 1)));
        }
        Ok(Commands(v))
    }
}

/// A job with every setting resolved against the config's defaults: what the runner executes.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    /// `None`: the job runs only by hand.
    pub timing: Option<Timing>,
    pub target: Target,
    pub ssh: ssh::Settings,
    pub run: RunSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub commands: Vec<String>,
    /// Shipped and run after `commands` (see [`super::script`]).
    pub script: Option<ScriptSpec>,
    pub timeout: Duration,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    pub output_limit: u64,
}

/// Whether a name is a valid job name (it becomes part of file names and log fields).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// Parse one job file's text. On failure, every problem found is returned.
pub fn parse(file: &Path, text: &str, defaults: &JobDefaults) -> Result<Job, Vec<Diagnostic>> {
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let mut diags = Vec::new();
    if !valid_name(&name) {
        diags.push(Diagnostic::file(
            file,
            format!("{name:?} is not a valid job name; rename the file to letters, digits, '-', '_' or '.'"),
        ));
    }
    let spec: JobSpec = match crate::tomlfile::parse(file, text) {
        Ok(s) => s,
        Err(d) => {
            diags.extend(d);
            return Err(diags);
        }
    };
    let d = &defaults.ssh;
    let identity_file = spec.ssh.identity_file.clone().or_else(|| d.identity_file.clone());
    let user = spec.ssh.user.clone().or_else(|| d.user.clone());
    let host_keys = spec.ssh.host_keys.unwrap_or_default();
    if host_keys == HostKeyPolicy::Tofu && !d.allow_tofu {
        diags.push(Diagnostic::field(
            file,
            text,
            "ssh.host_keys",
            "\"tofu\" is forbidden by allow_tofu = false in the config's [ssh] section; list the hosts' keys in known_hosts and use host_keys = \"known-hosts\"",
        ));
    }
    let auth = spec.ssh.auth.unwrap_or(d.auth);
    if auth == AuthMethod::Key && identity_file.is_none() {
        diags.push(Diagnostic::field(
            file,
            text,
            "ssh.identity_file",
            "no SSH identity file; set identity_file in the job's [ssh] section or in the config's [ssh] defaults, or use auth = \"instance-connect\" (EC2 Instance Connect, no key at rest)",
        ));
    }
    if user.is_none() {
        diags.push(Diagnostic::field(
            file,
            text,
            "ssh.user",
            "no SSH user; set user in the job's [ssh] section or in the config's [ssh] defaults",
        ));
    }
    let script = spec.run.script.as_ref().map(|p| ScriptSpec {
        path: file.parent().unwrap_or(Path::new(".")).join(p),
        args: spec.run.args.clone().unwrap_or_default(),
    });
    match &script {
        Some(s) => {
            if let Err(e) = super::script::check(&s.path) {
                diags.push(Diagnostic::field(file, text, "run.script", e.to_string()));
            }
        }
        None if spec.run.commands.is_none() => diags.push(Diagnostic::field(
            file,
            text,
            "run",
            "nothing to run: give commands = [\"uptime\"], script = \"scripts/task.sh\" (relative to the job file), or both",
        )),
        None => {}
    }
    if spec.run.args.is_some() && script.is_none() {
        diags.push(Diagnostic::field(
            file,
            text,
            "run.args",
            "args are the script's arguments; add script = \"scripts/task.sh\" or put the arguments in commands",
        ));
    }
    let timing = match spec.schedule {
        Some(schedule) => {
            let jitter = spec.jitter.map(|j| j.0).unwrap_or_default();
            if let Schedule::Rate { every, .. } = &schedule {
                if jitter >= *every {
                    diags.push(Diagnostic::field(
                        file,
                        text,
                        "jitter",
                        format!(
                            "jitter {} is not shorter than the interval {}; lower it so firings cannot pass each other",
                            humantime::format_duration(jitter),
                            humantime::format_duration(*every)
                        ),
                    ));
                }
            }
            // A cron's firings are as close as its shortest gap (within a year, DST included).
            let tz = spec.timezone.map(|t| t.0).unwrap_or(chrono_tz::Tz::UTC);
            if !jitter.is_zero() {
                let year = chrono::Duration::days(366);
                if let Some((gap, a, b)) = super::calendar::shortest_gap(&schedule, chrono::Utc::now(), tz, year, 2000)
                {
                    if gap.to_std().is_ok_and(|g| jitter >= g) {
                        diags.push(Diagnostic::field(
                            file,
                            text,
                            "jitter",
                            format!(
                                "jitter {} is not shorter than the schedule's shortest gap between firings ({}, from {a} to {b}); lower it so firings cannot pass each other",
                                humantime::format_duration(jitter),
                                humantime::format_duration(gap.to_std().unwrap_or_default())
                            ),
                        ));
                    }
                }
            }
            Some(Timing {
                schedule,
                timezone: tz,
                jitter,
                overlap: spec.overlap.unwrap_or_default(),
                catch_up: spec.catch_up.unwrap_or(false),
            })
        }
        None => {
            let set = [
                ("timezone", spec.timezone.is_some()),
                ("jitter", spec.jitter.is_some()),
                ("overlap", spec.overlap.is_some()),
                ("catch_up", spec.catch_up.is_some()),
            ];
            for (key, _) in set.iter().filter(|(_, s)| *s) {
                diags.push(Diagnostic::field(
                    file,
                    text,
                    key,
                    format!("{key} applies to scheduled jobs only; add a schedule or remove {key}"),
                ));
            }
            None
        }
    };
    if !diags.is_empty() {
        return Err(diags);
    }
    let r = &defaults.run;
    Ok(Job {
        name,
        file: file.to_path_buf(),
        description: spec.description,
        timing,
        target: Target { tags: spec.target.tags, states: spec.target.states, address: spec.target.address },
        ssh: ssh::Settings {
            user: user.unwrap_or_default(),
            port: spec.ssh.port.unwrap_or(d.port),
            auth: match auth {
                AuthMethod::Key => ssh::Auth::Key(identity_file.unwrap_or_default()),
                AuthMethod::InstanceConnect => ssh::Auth::InstanceConnect,
            },
            host_keys,
            known_hosts: d.known_hosts.clone(),
            connect_timeout: spec.ssh.connect_timeout.map(|t| t.0).unwrap_or(d.connect_timeout.0),
        },
        run: RunSettings {
            commands: spec.run.commands.map(|c| c.0).unwrap_or_default(),
            script,
            timeout: spec.run.timeout.map(|t| t.0).unwrap_or(r.timeout.0),
            max_concurrency: spec.run.max_concurrency.unwrap_or(r.max_concurrency),
            max_errors: spec.run.max_errors.unwrap_or(r.max_errors),
            output_limit: spec.run.output_limit.unwrap_or(r.output_limit).0,
        },
    })
}

/// Read and parse one job file.
pub fn load(file: &Path, defaults: &JobDefaults) -> Result<Job, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![Diagnostic::file(file, format!("cannot read the job file: {e}; check the path and permissions"))]
    })?;
    parse(file, &text, defaults)
}

/// The job files of a directory (`*.toml`), sorted by name.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        Diagnostic::file(
            dir,
            format!("cannot read the jobs directory: {e}; set jobs_dir in the config to an existing directory"),
        )
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Every job of a directory. Bad files do not stop the others: their diagnostics come back beside the good jobs.
pub fn load_dir(dir: &Path, defaults: &JobDefaults) -> (Vec<Job>, Vec<Diagnostic>) {
    let files = match files_in(dir) {
        Ok(f) => f,
        Err(d) => return (Vec::new(), vec![d]),
    };
    let mut jobs = Vec::new();
    let mut diags = Vec::new();
    for f in files {
        match load(&f, defaults) {
            Ok(j) => jobs.push(j),
            Err(d) => diags.extend(d),
        }
    }
    (jobs, diags)
}

/// Find the job `name_or_path`: a path to a file, or a name looked up as `<jobs_dir>/<name>.toml`.
/// Only that file is read, so a broken neighbour cannot stop it.
pub fn find(name_or_path: &str, jobs_dir: &Path, defaults: &JobDefaults) -> Result<Job, Vec<Diagnostic>> {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        return load(as_path, defaults);
    }
    if !valid_name(name_or_path) {
        return Err(vec![Diagnostic::file(
            as_path,
            "not a valid job name; give the file stem of a job in the jobs directory",
        )]);
    }
    let file = jobs_dir.join(format!("{name_or_path}.toml"));
    if !file.exists() {
        return Err(vec![Diagnostic::file(
            &file,
            format!("no job named {name_or_path:?} in {}; `opsd jobs` lists the jobs", jobs_dir.display()),
        )]);
    }
    load(&file, defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JobDefaults {
        let mut c = JobDefaults::default();
        c.ssh.user = Some("ec2-user".into());
        c.ssh.identity_file = Some("/etc/opsd/keys/fleet".into());
        c
    }

    const GOOD: &str = r#"
description = "Say hello"
schedule = "rate(15 minutes)"
[target]
tags = { Environment = "Dev", Role = ["web", "api"] }
[run]
commands = ["uname -r"]
max_concurrency = "20%"
"#;

    #[test]
    fn good_job_resolves_defaults() {
        let j = parse(Path::new("jobs/hello.toml"), GOOD, &cfg()).unwrap();
        assert_eq!(j.name, "hello");
        assert_eq!(j.ssh.user, "ec2-user");
        assert_eq!(j.ssh.port, 22);
        assert_eq!(j.target.states, vec![InstanceState::Running]);
        assert_eq!(j.target.tags.0["Role"], vec!["web", "api"]);
        assert_eq!(j.run.max_concurrency, Limit::Percent(20.0));
        assert_eq!(j.run.output_limit, 64 * 1024);
    }

    #[test]
    fn tofu_is_refused_where_the_config_forbids_it() {
        let text = format!("{GOOD}[ssh]\nhost_keys = \"tofu\"\n");
        assert!(parse(Path::new("jobs/t.toml"), &text, &cfg()).is_ok());
        let mut strict = cfg();
        strict.ssh.allow_tofu = false;
        let d = parse(Path::new("jobs/t.toml"), &text, &strict).unwrap_err().remove(0);
        assert_eq!((d.line, d.field.as_str()), (10, "ssh.host_keys"), "{d}");
        assert!(d.message.contains("allow_tofu = false"), "{d}");
    }

    fn first_error(text: &str) -> Diagnostic {
        parse(Path::new("jobs/x.toml"), text, &cfg()).unwrap_err().remove(0)
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let d = first_error("[target]\ntags = { A = \"b\" }\n[run]\ncommands = [\"true\"]\ntimeot = \"5m\"\n");
        assert_eq!((d.line, d.field.as_str()), (5, "run.timeot"), "{d}");
        assert!(d.message.contains("unknown"), "{d}");
    }

    #[test]
    fn bad_value_names_line_column_and_field() {
        let d = first_error("[target]\ntags = { A = \"b\" }\n[run]\ncommands = [\"true\"]\ntimeout = \"5 parsecs\"\n");
        assert_eq!((d.line, d.col, d.field.as_str()), (5, 11, "run.timeout"), "{d}");
        let d = first_error(
            "schedule = \"rate(1 minutes)\"\n[target]\ntags = { A = \"b\" }\n[run]\ncommands = [\"true\"]\n",
        );
        assert_eq!((d.line, d.field.as_str()), (1, "schedule"), "{d}");
        let d = first_error("[target]\ntags = {}\n[run]\ncommands = [\"true\"]\n");
        assert_eq!((d.line, d.field.as_str()), (2, "target.tags"), "{d}");
        let d = first_error("[target]\ntags = { A = \"b\" }\naddress = \"ipv9\"\n[run]\ncommands = [\"true\"]\n");
        assert_eq!((d.line, d.field.as_str()), (3, "target.address"), "{d}");
    }

    #[test]
    fn every_error_of_a_job_file_is_reported() {
        let text = "schedule = \"rate(1 minutes)\"\n[target]\ntags = { A = 5 }\nstates = [\"runing\"]\n[ssh]\nprt = 22\n[run]\ncommands = \"uptime\"\ntimeout = \"soon\"\n";
        let e = parse(Path::new("jobs/x.toml"), text, &cfg()).unwrap_err();
        let got: Vec<String> = e.iter().map(|d| format!("{}:{}", d.line, d.field)).collect();
        assert_eq!(
            got,
            ["1:schedule", "3:target.tags.A", "4:target.states.0", "6:ssh.prt", "8:run.commands", "9:run.timeout"]
        );
    }

    #[test]
    fn missing_section_and_syntax_errors() {
        let d = first_error("[target]\ntags = { A = \"b\" }\n");
        assert!(d.message.contains("run"), "{d}");
        let d = first_error("[target\ntags = 1\n");
        assert_eq!(d.line, 1, "{d}");
    }

    #[test]
    fn missing_identity_is_reported_with_its_field() {
        let c = JobDefaults::default();
        let e = parse(Path::new("jobs/x.toml"), "[target]\ntags = { A = \"b\" }\n[run]\ncommands = [\"true\"]\n", &c)
            .unwrap_err();
        let fields: Vec<_> = e.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["ssh.identity_file", "ssh.user"]);
    }

    #[test]
    fn jitter_must_be_shorter_than_a_crons_shortest_gap() {
        let job = |schedule: &str, jitter: &str| {
            format!("schedule = \"{schedule}\"\njitter = \"{jitter}\"\n[target]\ntags = {{ A = \"b\" }}\n[run]\ncommands = [\"true\"]\n")
        };
        // Minutes 0 and 50: firings 10 minutes apart once an hour, 50 the rest of the time.
        let e = parse(Path::new("jobs/x.toml"), &job("0,50 * * * *", "15m"), &cfg()).unwrap_err();
        assert_eq!((e[0].line, e[0].field.as_str()), (2, "jitter"), "{e:?}");
        assert!(e[0].message.contains("shortest gap between firings (10m"), "{}", e[0].message);
        assert!(parse(Path::new("jobs/x.toml"), &job("0,50 * * * *", "9m"), &cfg()).is_ok());
        // A daily cron at 09:00 has a day between firings.
        assert!(parse(Path::new("jobs/x.toml"), &job("cron(0 9 * * ? *)", "2h"), &cfg()).is_ok());
    }
}
