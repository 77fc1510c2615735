//! Shared test harness: one sandbox (moto + sshd, started by `scripts/sandbox up`) per test binary;
//! each test isolates itself with unique tags, its own config, jobs and state directories.

#![allow(dead_code)]

pub mod capacity;
pub mod cluster;
pub mod daemon;
pub mod lifecycle;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sandbox's env file as a map, bringing the sandbox up first (idempotent).
pub fn sandbox() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let out = Command::new(root().join("scripts/sandbox"))
            .arg("up")
            .output()
            .expect("cannot run scripts/sandbox; it needs bash and python3");
        assert!(
            out.status.success(),
            "scripts/sandbox up failed (it installs openssh-server with apt and moto with pip; run it by hand to see why):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

pub fn env(key: &str) -> String {
    sandbox().get(key).unwrap_or_else(|| panic!("{key} missing from the sandbox env file")).clone()
}

/// A tag value no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    // The nonce keeps tags apart from an earlier test process that had the same pid, on a long-lived sandbox.
    static NONCE: OnceLock<u128> = OnceLock::new();
    let nonce =
        NONCE.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    format!("{prefix}-{}-{:x}-{}", std::process::id(), nonce % (1 << 40), N.fetch_add(1, Ordering::SeqCst))
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub address: String,
}

/// `scripts/sandbox fleet N --tag …` plus extra flags (`--state stopped`, `--no-listen`, …).
pub fn fleet(n: usize, tags: &[(&str, &str)], extra: &[&str]) -> Vec<Instance> {
    sandbox();
    let mut cmd = Command::new(root().join("scripts/sandbox"));
    cmd.arg("fleet").arg(n.to_string());
    for (k, v) in tags {
        cmd.arg("--tag").arg(format!("{k}={v}"));
    }
    cmd.args(extra);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "sandbox fleet failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Instance { id: i["id"].as_str().unwrap().into(), address: i["address"].as_str().unwrap().into() })
        .collect()
}

/// A test's own opsd setup: config, jobs dir and state dir in a temp dir, pointed at the sandbox.
pub struct Ctx {
    pub dir: tempfile::TempDir,
    /// A world-writable directory where remote commands (run as the sandbox user) leave evidence.
    pub evidence: PathBuf,
    /// The AWS access key this test's opsd signs with: the sandbox's faults are switched on per key.
    pub access_key: String,
}

impl Ctx {
    pub fn new() -> Ctx {
        Self::with_config_extra("")
    }

    pub fn with_config_extra(extra: &str) -> Ctx {
        sandbox();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        let evidence = dir.path().join("evidence");
        std::fs::create_dir(&evidence).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&evidence, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cfg = format!(
            "jobs_dir = \"jobs\"\nstate_dir = \"state\"\n[aws]\nregion = \"{}\"\n# Small pages, so every test exercises pagination.\npage_size = 100\n[ssh]\nuser = \"{}\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"5s\"\n{extra}",
            env("AWS_REGION"),
            env("OPSD_SANDBOX_SSH_USER"),
            env("OPSD_SANDBOX_SSH_PORT"),
            env("OPSD_SANDBOX_SSH_KEY"),
            env("OPSD_SANDBOX_KNOWN_HOSTS"),
        );
        std::fs::write(dir.path().join("opsd.toml"), cfg).unwrap();
        let access_key = format!("AKIA{}", unique("").replace('-', "").to_uppercase());
        Ctx { dir, evidence, access_key }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("opsd.toml")
    }

    pub fn write_job(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join("jobs").join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A command running the opsd binary with the sandbox environment and this test's config.
    pub fn opsd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_opsd"));
        for (k, v) in sandbox() {
            c.env(k, v);
        }
        c.env("AWS_ACCESS_KEY_ID", &self.access_key);
        c.env("OPSD_CONFIG", self.config());
        c.env_remove("OPSD_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.opsd().args(args).output().unwrap()
    }

    /// `opsd ARGS… --output json`, parsed (for `history`).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--output", "json"]);
        let out = self.run(&all);
        assert!(out.status.success(), "opsd {all:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("opsd {all:?} printed no JSON ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr))
        })
    }

    /// `opsd run JOB --output json …`: the exit code and the parsed document.
    pub fn run_json(&self, job: &str, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec!["run", job, "--output", "json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "opsd run printed no JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), doc)
    }

    pub fn evidence_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.evidence)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// A job file targeting `tag=value`, with the given extra TOML for [run] and other sections.
pub fn job(tag: &str, value: &str, commands: &[&str], run_extra: &str, more: &str) -> String {
    let cmds: Vec<String> = commands.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[target]\ntags = {{ {tag} = \"{value}\" }}\n{more}\n[run]\ncommands = [{}]\n{run_extra}\n",
        cmds.join(", ")
    )
}

/// Hosts of a run document, keyed by instance id.
pub fn hosts_by_id(doc: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    doc["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts in {doc}"))
        .iter()
        .map(|h| (h["host"]["instance_id"].as_str().unwrap().to_string(), h.clone()))
        .collect()
}

pub fn secs_between(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let p = |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    (p(b) - p(a)).num_milliseconds() as f64 / 1000.0
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Processes whose command line is exactly `command` (not the shell that started them).
pub fn remote_processes(command: &str) -> usize {
    let pattern = format!("^{command}$");
    let out = std::process::Command::new("pgrep").args(["-f", &pattern]).output().expect("pgrep (procps) is needed");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Polls (every 100 ms, `tries` times) until `command` runs `want` times; returns the last count.
pub fn wait_for_remote(command: &str, want: usize, tries: usize) -> usize {
    let mut n = remote_processes(command);
    for _ in 0..tries {
        if n == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        n = remote_processes(command);
    }
    n
}

/// Switch the sandbox's AWS faults (scripts/moto_ext/faults.py) for this test's opsd to `spec`, a
/// JSON object of its rules: `{"throttle": {...}, "errors": {...}, "after": 0.3, "not_found_seconds": 5}`.
pub fn faults(ctx: &Ctx, spec: serde_json::Value) {
    let mut spec = spec;
    spec["access_key"] = ctx.access_key.clone().into();
    let (status, body) = moto_ext("POST", "/moto-ext/faults", &spec.to_string());
    assert_eq!(status, 200, "POST /moto-ext/faults: {body}");
}

/// The faults the sandbox injected into this test's opsd so far: error code → action → count.
pub fn injected(ctx: &Ctx) -> serde_json::Value {
    let (status, body) = moto_ext("GET", &format!("/moto-ext/faults?access_key={}", ctx.access_key), "");
    assert_eq!(status, 200, "GET /moto-ext/faults: {body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["injected"].clone()
}

/// The number of injected faults whose code starts with `code`.
pub fn injected_count(injected: &serde_json::Value, code: &str) -> u64 {
    let Some(all) = injected.as_object() else { return 0 };
    all.iter()
        .filter(|(k, _)| k.starts_with(code))
        .flat_map(|(_, by_action)| by_action.as_object().into_iter().flatten())
        .filter_map(|(_, n)| n.as_u64())
        .sum()
}

/// One HTTP/1.1 request to the sandbox moto's control endpoints: (status, body).
pub fn moto_ext(method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let endpoint = env("AWS_ENDPOINT_URL");
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The AWS SDK configuration for the sandbox's moto (no retries: a failing call fails the test at once).
pub fn sdk_config(rt: &tokio::runtime::Runtime) -> aws_config::SdkConfig {
    let creds = aws_sdk_ec2::config::Credentials::new(
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "sandbox",
    );
    rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(env("AWS_ENDPOINT_URL"))
            .region(aws_config::Region::new(env("AWS_REGION")))
            .credentials_provider(creds)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load(),
    )
}
