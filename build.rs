//! Records the git commit opsd is built from (`OPSD_COMMIT`), for `opsd --version`, the daemon's
//! banner and `opsd_build_info`. A build outside a git checkout (a source tarball) says `unknown`.
//! Uncommitted changes are not marked: that would need this script to run on every source change.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OPSD_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout); only files that exist (a missing one would
    // rerun this on every build).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let mut watch = vec![format!("{dir}/HEAD"), format!("{dir}/packed-refs")];
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(format!("{dir}/{head}"));
        }
        for path in watch.into_iter().filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
