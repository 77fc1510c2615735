//! Nothing a run starts outlives it. Each command runs under a small POSIX `sh` wrapper on the host
//! that owns the command's process group (`setsid`) and watches the channel: when opsd gives up on
//! the command (timeout, cancellation) it closes the channel's stdin, and the wrapper sends the
//! whole group SIGTERM, then SIGKILL, and reports whether the group is gone. sshd's own `signal`
//! request reaches only the session's first process, and cannot signal a command under `sudo`; a
//! group kill reaches `sudo`, which relays the TERM to its command (with `use_pty` too), and every
//! background child of the command.
//!
//! Why a wrapper and not a PTY (whose hang-up reaches the foreground group): a PTY merges stdout and
//! stderr and rewrites line endings, which opsd keeps apart and byte for byte. The command's own
//! stdin is /dev/null (opsd never sends input). A host without `setsid` (or `mktemp`) runs the
//! command plainly, and opsd falls back to sshd's KILL signal.

/// The wrapper: `$1` is the command. With `$2` (a byte count), the first `$2` bytes of stdin are a
/// script shipped by opsd: they go to `$t/s` in the wrapper's private temporary directory (mode
/// 0700, from `mktemp -d`), the command finds it as `$OPSD_SCRIPT`, and it is removed with the
/// directory when the command ends or is ended. A script needs `setsid`, `mktemp` and `head`.
const SCRIPT: &str = r#"need() { [ -z "$2" ] && exec sh -c "$1"; echo "opsd: [run] script needs $3 on the host (util-linux, coreutils or busybox)" >&2; exit 127; }
command -v setsid >/dev/null 2>&1 || need "$1" "$2" setsid
exec 3<&0
t=$(mktemp -d 2>/dev/null) || need "$1" "$2" mktemp
if [ -n "$2" ]; then
  head -c "$2" <&3 > "$t/s" 2>/dev/null
  if [ "$(($(wc -c < "$t/s")))" != "$2" ]; then rm -rf "$t"; echo "opsd: the script arrived incomplete (head -c missing, or the connection broke)" >&2; exit 125; fi
  OPSD_SCRIPT="$t/s"; export OPSD_SCRIPT
fi
setsid sh -c "$1" </dev/null &
p=$!
(
  while read -r _ <&3; do :; done
  : > "$t/k"
  gone() { LC_ALL=C kill -0 "-$p" 2>&1 | grep -q 'No such process'; }
  kill -TERM "-$p" 2>/dev/null
  for _ in 1 2 3; do gone && break; sleep 1; done
  if ! gone; then kill -KILL "-$p" 2>/dev/null; sleep 1; fi
  if gone; then echo "opsd-reaper: ended" >&2; else echo "opsd-reaper: not ended" >&2; fi
) &
w=$!
exec 3<&-
wait "$p" 2>/dev/null; rc=$?
if [ -e "$t/k" ]; then wait "$w"; else kill "$w" 2>/dev/null; fi
rm -rf "$t"
if [ "$rc" -gt 128 ]; then kill -s "$(kill -l "$rc")" $$; fi
exit "$rc""#;

/// What the wrapper said after opsd gave up on a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// The command's process group is gone.
    Ended,
    /// Processes of the group remain (e.g. under another user, which the group kill cannot reach).
    Remain,
}

/// How long the wrapper may take to end the group and say so: TERM, up to 3 s, KILL, 1 s.
pub const REAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7);

/// The exec request for `command`: the login shell execs `sh` with the wrapper.
pub fn wrap(command: &str) -> String {
    format!("exec sh -c {} opsd {}", quote(SCRIPT), quote(command))
}

/// The exec request for `command` with a shipped script of `len` bytes, which opsd then sends on
/// the channel's stdin (the command reads it at `$OPSD_SCRIPT`).
pub fn wrap_script(command: &str, len: usize) -> String {
    format!("exec sh -c {} opsd {} {len}", quote(SCRIPT), quote(command))
}

/// `s` as one single-quoted shell word.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The wrapper's report in stderr `data`, if there is one.
pub fn report(data: &[u8]) -> Option<Reaped> {
    let text = String::from_utf8_lossy(data);
    if text.contains("opsd-reaper: not ended") {
        Some(Reaped::Remain)
    } else if text.contains("opsd-reaper: ended") {
        Some(Reaped::Ended)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wrapper, run by the local `sh` as sshd would run it: output, exit status and a death by
    /// signal come through as the command's own; stdin closing ends the command's whole group.
    #[test]
    fn the_wrapper_keeps_the_command_and_ends_its_group() {
        use std::io::Read;
        use std::process::{Command, Stdio};
        // Stdin stays open until the command has ended, as opsd keeps the channel's open.
        let run = |command: &str| {
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(wrap(command))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take();
            let (mut out, mut err) = (String::new(), String::new());
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            let status = child.wait().unwrap();
            drop(stdin);
            (status, out, err)
        };
        let (status, out, err) = run("echo 'it''s'; echo err >&2; exit 3");
        assert_eq!((status.code(), out.as_str(), err.as_str()), (Some(3), "its\n", "err\n"));
        let (status, _, err) = run("kill -9 $$");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!((status.signal(), err.as_str()), (Some(9), ""));
        // Given up on (stdin closed): the command and its background child end, and it says so.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(wrap("sleep 4711 & sleep 4712"))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(child.stdin.take());
        let mut err = Vec::new();
        child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
        child.wait().unwrap();
        assert_eq!(report(&err), Some(Reaped::Ended), "{}", String::from_utf8_lossy(&err));
        let left = Command::new("pgrep").args(["-f", "sleep 471[12]"]).output().unwrap();
        assert!(left.stdout.is_empty(), "left running: {}", String::from_utf8_lossy(&left.stdout));
    }

    /// A shipped script: its bytes come first on stdin, land in a private file the command reads
    /// as $OPSD_SCRIPT, and are gone when the command has ended; stdin then still watches.
    #[test]
    fn a_shipped_script_runs_from_a_private_file_removed_afterwards() {
        use std::io::{Read, Write};
        use std::process::{Command, Stdio};
        let script = b"#!/bin/sh\necho \"args: $*\"\nls -ld \"$(dirname \"$0\")\" | cut -c1-10\necho \"$0\"\n";
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(wrap_script("sh \"$OPSD_SCRIPT\" 'a b' c", script.len()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script).unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        assert!(status.success(), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], ["args: a b c", "drwx------"], "{out}");
        assert!(lines[2].ends_with("/s"), "{out}");
        assert!(!std::path::Path::new(lines[2]).exists(), "{} was left behind", lines[2]);
        // Cut short (fewer bytes than announced, then stdin closed): refused, nothing runs.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(wrap_script("echo ran", 100))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"echo partial\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("the script arrived incomplete"));
    }
}
