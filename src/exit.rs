//! The exit codes opsd promises to scripts (sysexits.h where one fits).

/// How a command ended, as a process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything succeeded.
    Ok = 0,
    /// The run finished but some host failed (command exit != 0, timeout, connect, auth or host key).
    HostsFailed = 1,
    /// No instance matched the job's target.
    NoHosts = 3,
    /// Bad command line, job file or config (EX_USAGE).
    Usage = 64,
    /// AWS was unreachable or denied the call (EX_UNAVAILABLE).
    Unavailable = 69,
    /// An internal error: the store could not be written, a bug (EX_SOFTWARE).
    Software = 70,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The text `--help` and the README show.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success: every host succeeded (or nothing was wrong)
  1   some host failed: a command exited non-zero, timed out, or connect/auth/host key failed
  3   no instance matched the job's target
  64  bad command line, job file or config (EX_USAGE)
  69  AWS unreachable or access denied (EX_UNAVAILABLE)
  70  internal error, e.g. the run history could not be written (EX_SOFTWARE)";
