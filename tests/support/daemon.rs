//! `opsd daemon` as a child process of a test.

use super::{unique, Ctx};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `opsd daemon`, its log in a file; killed if the test fails before stopping it.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn start(ctx: &Ctx, envs: &[(&str, &str)]) -> Daemon {
        let log = ctx.dir.path().join(format!("daemon-{}.log", unique("log")));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = ctx.opsd();
        cmd.arg("daemon").stdout(Stdio::from(out)).stderr(Stdio::from(err));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Daemon { child: Some(cmd.spawn().unwrap()), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the process is still running (not exited, even if not yet reaped).
    pub fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The state follows the parenthesised command name.
        !matches!(stat.rsplit(')').next().map(str::trim_start).and_then(|s| s.chars().next()), Some('Z') | None)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the metrics endpoint, from the start-up banner (started with
    /// `OPSD_METRICS_LISTEN=127.0.0.1:0`); None until the banner is logged.
    pub fn metrics_addr(&self) -> Option<String> {
        let log = self.log();
        log.split("metrics=http://").nth(1).and_then(|r| r.split('/').next()).map(String::from)
    }

    /// The metrics endpoint's text, waiting for the banner that names its address.
    pub fn metrics(&self) -> String {
        let mut addr = None;
        wait_for("the banner with the metrics address", 20, self, || {
            addr = self.metrics_addr();
            addr.is_some()
        });
        scrape(&addr.unwrap())
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.pid().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then wait (at most `limit`) for the exit: the exit code and how long it took.
    pub fn stop(self, limit: Duration) -> (Option<i32>, Duration, String) {
        self.signal("-TERM");
        self.wait(limit)
    }

    /// SIGTERM, then the exit within 30 s, which must be 0 (the log is shown if not); the log.
    pub fn stop_ok(self) -> String {
        let (code, _, log) = self.stop(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{log}");
        log
    }

    /// Wait (at most `limit`) for the exit: the exit code and how long it took.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, Duration, String) {
        let start = Instant::now();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), start.elapsed(), self.log());
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!("the daemon did not exit within {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls every 100 ms until `f` holds; panics naming `what` (and the daemon's log) after `secs`.
pub fn wait_for(what: &str, secs: u64, d: &Daemon, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        if !d.running() {
            panic!("the daemon exited while waiting for {what}; its log:\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs}s waiting for {what}; daemon log:\n{}", d.log());
}

/// GET /metrics from `addr`: the whole HTTP response (status line, headers, body).
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of one series (name with its labels) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
