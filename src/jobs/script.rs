//! `[run] script`: a file beside the job, shipped to each host over the job's own SSH channel and run
//! there with `args`, after the job's `commands`.
//!
//! How it travels: on the command's channel, as the first bytes of its stdin. The host's wrapper
//! ([`crate::ssh::reaper`]) reads exactly that many bytes into a file in its private temporary
//! directory (`mktemp -d`, mode 0700), runs the command, and removes the directory when the command
//! ends or is ended. Why not `sh -s` reading the script from stdin: stdin is the channel opsd uses to
//! end a command that ran out of time (the wrapper kills the process group when it closes), and a
//! script that reads its own stdin would eat its own text. Why not an SFTP upload and a second
//! command: a second round trip per host, an SFTP subsystem on every host, and a file a killed run
//! would leave behind.
//!
//! How it runs: the interpreter is the script's `#!` line (`#!/bin/bash`, `#!/usr/bin/env python3`),
//! else `sh`, given the file as its argument, so a `noexec` /tmp does not matter. The script's
//! SHA-256 goes into the run's record.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest script opsd ships: it travels to every host of every run, and goes through memory.
pub const MAX_BYTES: u64 = 256 * 1024;

/// `run.script` and `run.args` of a job, the path resolved against the job file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec {
    pub path: PathBuf,
    pub args: Vec<String>,
}

/// The script as read for one run.
#[derive(Debug, Clone)]
pub struct Shipped {
    pub bytes: Arc<[u8]>,
    /// Lowercase hex.
    pub sha256: String,
    /// What the host's wrapper runs: the interpreter, `"$OPSD_SCRIPT"` and the quoted args.
    pub command: String,
    /// How the command shows in the history and the live view.
    pub display: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error("cannot read the script {path}: {reason}; the path is relative to the job file; check it and the file's permissions")]
    Unreadable { path: PathBuf, reason: String },
    #[error("the script {path} is {size} bytes, more than the limit of {MAX_BYTES} (256 KiB); ship a smaller script that fetches or installs the rest")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("the script {path} is empty; write the script or remove run.script")]
    Empty { path: PathBuf },
}

/// Whether the script can be shipped: a readable, non-empty file within the limit (for validation).
pub fn check(path: &Path) -> Result<(), ScriptError> {
    read(path).map(|_| ())
}

/// Read the script for a run (blocking: call it off the runtime).
pub fn load(spec: &ScriptSpec) -> Result<Shipped, ScriptError> {
    let bytes = read(&spec.path)?;
    let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let interpreter = interpreter(&bytes);
    let args: Vec<String> = spec.args.iter().map(|a| crate::ssh::shell_quote(a)).collect();
    let mut command = interpreter.join(" ");
    command.push_str(" \"$OPSD_SCRIPT\"");
    for a in &args {
        command.push(' ');
        command.push_str(a);
    }
    let name = spec.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut display = format!("script {name}");
    for a in &args {
        display.push(' ');
        display.push_str(a);
    }
    Ok(Shipped { bytes: bytes.into(), sha256, command, display })
}

fn read(path: &Path) -> Result<Vec<u8>, ScriptError> {
    let unreadable = |e: std::io::Error| ScriptError::Unreadable { path: path.to_path_buf(), reason: e.to_string() };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ScriptError::Unreadable { path: path.to_path_buf(), reason: "not a regular file".into() });
    }
    // Read one byte past the limit: a file that grew since its metadata was read is still caught.
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_BYTES) as usize);
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ScriptError::TooLarge { path: path.to_path_buf(), size: meta.len().max(bytes.len() as u64) });
    }
    if bytes.is_empty() {
        return Err(ScriptError::Empty { path: path.to_path_buf() });
    }
    Ok(bytes)
}

/// The `#!` line's interpreter and its argument (the kernel's rule: one optional argument), each
/// quoted for the shell; `sh` without one.
fn interpreter(bytes: &[u8]) -> Vec<String> {
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let Some(line) = first.strip_prefix(b"#!") else { return vec!["sh".into()] };
    let line = String::from_utf8_lossy(line);
    let line = line.trim();
    let (prog, arg) = match line.split_once(char::is_whitespace) {
        Some((p, a)) => (p, Some(a.trim())),
        None => (line, None),
    };
    if prog.is_empty() {
        return vec!["sh".into()];
    }
    std::iter::once(prog).chain(arg).map(crate::ssh::shell_quote).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, name: &str, text: &[u8], args: &[&str]) -> ScriptSpec {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        ScriptSpec { path, args: args.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn the_interpreter_comes_from_the_shebang() {
        let d = tempfile::tempdir().unwrap();
        let s = load(&spec(d.path(), "a.sh", b"#!/bin/bash -eu\necho hi\n", &["it's", "x"])).unwrap();
        assert_eq!(s.command, r#"'/bin/bash' '-eu' "$OPSD_SCRIPT" 'it'\''s' 'x'"#);
        assert_eq!(s.display, r#"script a.sh 'it'\''s' 'x'"#);
        let s = load(&spec(d.path(), "b.py", b"#!/usr/bin/env python3\nprint(1)\n", &[])).unwrap();
        assert_eq!(s.command, r#"'/usr/bin/env' 'python3' "$OPSD_SCRIPT""#);
        let s = load(&spec(d.path(), "c", b"echo plain\n", &[])).unwrap();
        assert_eq!(s.command, r#"sh "$OPSD_SCRIPT""#);
        // The digest of the bytes shipped (sha256sum of "echo plain\n").
        assert_eq!(s.sha256, "69472ce95c91f64fb3b809611196d3aee541a79fa51e6cbe47e44e5ff9f3282a");
    }

    #[test]
    fn bad_scripts_are_refused_with_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let missing = ScriptSpec { path: d.path().join("nope.sh"), args: vec![] };
        assert!(matches!(load(&missing), Err(ScriptError::Unreadable { .. })));
        assert!(load(&missing).unwrap_err().to_string().contains("relative to the job file"));
        assert_eq!(
            load(&spec(d.path(), "e.sh", b"", &[])).unwrap_err(),
            ScriptError::Empty { path: d.path().join("e.sh") }
        );
        let big = vec![b'#'; MAX_BYTES as usize + 1];
        let e = load(&spec(d.path(), "big.sh", &big, &[])).unwrap_err();
        assert!(e.to_string().contains("more than the limit of 262144"), "{e}");
        assert!(load(&spec(d.path(), "ok.sh", &big[..MAX_BYTES as usize], &[])).is_ok());
        let dir = ScriptSpec { path: d.path().to_path_buf(), args: vec![] };
        assert!(load(&dir).unwrap_err().to_string().contains("not a regular file"), "{:?}", load(&dir));
    }
}
