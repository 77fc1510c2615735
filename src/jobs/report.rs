//! What a run shows a person or a script: the live view (indicatif on a TTY, host-prefixed lines
//! otherwise), the closing summary, and the JSON document.

use super::outcome::{HostResult, HostStatus, RunOutcome, TriggerKind};
use super::runner::Event;
use crate::ssh::Stream;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// The live view of a run.
pub struct Live {
    labels: Vec<String>,
    bar: Option<ProgressBar>,
    /// Partial lines per host and stream, until their newline arrives.
    partial: Vec<[Vec<u8>; 2]>,
    quiet: bool,
}

impl Live {
    /// `tty`: draw a progress bar; `quiet`: print nothing (JSON output).
    pub fn new(labels: Vec<String>, tty: bool, quiet: bool) -> Live {
        let bar = (tty && !quiet).then(|| {
            let b = ProgressBar::new(labels.len() as u64);
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} hosts {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let partial = labels.iter().map(|_| [Vec::new(), Vec::new()]).collect();
        Live { labels, bar, partial, quiet }
    }

    pub fn on_event(&mut self, ev: &Event, failed_so_far: usize) {
        if self.quiet {
            return;
        }
        match ev {
            Event::Started { .. } => {}
            Event::Output { seq, stream, data } => {
                let i = matches!(stream, Stream::Stderr) as usize;
                let mut buf = std::mem::take(&mut self.partial[*seq][i]);
                buf.extend_from_slice(data);
                let mut start = 0;
                while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
                    let text = String::from_utf8_lossy(&buf[start..start + nl]).into_owned();
                    self.print_line(*seq, *stream, &text);
                    start += nl + 1;
                }
                buf.drain(..start);
                self.partial[*seq][i] = buf;
            }
            Event::Finished { seq, result } => {
                for (i, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
                    let rest = std::mem::take(&mut self.partial[*seq][i]);
                    if !rest.is_empty() {
                        self.print_line(*seq, stream, &String::from_utf8_lossy(&rest));
                    }
                }
                let line = format!("{} {}", self.labels[*seq], host_line(result));
                self.println(&line);
                if let Some(b) = &self.bar {
                    b.inc(1);
                    if failed_so_far > 0 {
                        b.set_message(format!("({failed_so_far} failed)"));
                    }
                }
            }
        }
    }

    fn print_line(&self, seq: usize, stream: Stream, text: &str) {
        let mark = if stream == Stream::Stderr { '!' } else { '|' };
        // A CRLF line's CR is the line ending, not content.
        let text = text.strip_suffix('\r').unwrap_or(text);
        self.println(&format!("{} {mark} {}", self.labels[seq], crate::output::visible(text)));
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `ok 0.31s` / `FAILED (command_failed) command "x" exited with status 3`.
pub fn host_line(r: &HostResult) -> String {
    let secs = (r.ended_at - r.started_at).num_milliseconds() as f64 / 1000.0;
    let mut s = match r.status {
        HostStatus::Ok => format!("ok in {secs:.2}s"),
        HostStatus::Failed => "FAILED".to_string(),
        HostStatus::Skipped => "SKIPPED".to_string(),
        HostStatus::Cancelled => "CANCELLED".to_string(),
    };
    if let (Some(k), Some(e)) = (r.error_kind, &r.error) {
        s.push_str(&format!(" ({}) {}", k.as_str(), crate::output::visible(e)));
    }
    if r.stdout_dropped + r.stderr_dropped > 0 {
        s.push_str(&format!(
            " [output over the limit dropped: {} B stdout, {} B stderr]",
            r.stdout_dropped, r.stderr_dropped
        ));
    }
    s
}

/// Host counts of a run.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counts {
    pub total: usize,
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
}

impl Counts {
    pub fn of(results: &[HostResult]) -> Counts {
        let mut c = Counts { total: results.len(), ..Default::default() };
        for r in results {
            match r.status {
                HostStatus::Ok => c.ok += 1,
                HostStatus::Failed => c.failed += 1,
                HostStatus::Skipped => c.skipped += 1,
                HostStatus::Cancelled => c.cancelled += 1,
            }
        }
        c
    }

    /// The run's outcome, as stored and printed.
    pub fn outcome(&self) -> RunOutcome {
        if self.total == 0 {
            RunOutcome::NoHosts
        } else if self.cancelled > 0 {
            RunOutcome::Cancelled
        } else if self.failed + self.skipped > 0 {
            RunOutcome::Failed
        } else {
            RunOutcome::Succeeded
        }
    }
}

/// `opsd run --output json`: one document.
#[derive(Serialize)]
pub struct RunDocument<'a> {
    pub run_id: Option<i64>,
    pub job: &'a str,
    pub trigger: TriggerKind,
    pub started_at: String,
    pub ended_at: String,
    pub outcome: RunOutcome,
    pub counts: Counts,
    /// The SHA-256 of the script the run shipped (absent for a job of commands alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_sha256: Option<&'a str>,
    pub hosts: &'a [HostResult],
}

/// The text summary after a run: counts, then every host that did not succeed.
pub fn summary(job: &str, run_id: Option<i64>, results: &[HostResult], elapsed: Duration) -> String {
    let c = Counts::of(results);
    let id = run_id.map(|i| format!("run {i} of ")).unwrap_or_default();
    let mut s = format!(
        "{id}{job}: {} hosts, {} ok, {} failed, {} skipped, {} cancelled in {:.2}s\n",
        c.total,
        c.ok,
        c.failed,
        c.skipped,
        c.cancelled,
        elapsed.as_secs_f64()
    );
    for r in results.iter().filter(|r| r.status != HostStatus::Ok) {
        s.push_str(&format!(
            "  {:<20} {:<16} {}\n",
            r.host.instance_id.as_deref().unwrap_or("-"),
            r.host.address.as_deref().unwrap_or("-"),
            host_line(r)
        ));
    }
    s
}
