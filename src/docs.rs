//! The man pages and shell completions of the Debian package, generated from the clap definitions
//! (`cli::Cli`) so that they cannot drift from `--help`. `scripts/package` runs the binary it
//! packages, `opsd package-docs OUT_DIR` (a hidden command), which writes OUT_DIR/man/opsd.1 plus
//! one page per subcommand (opsd-run.1, opsd-lifecycle-status.1, …, as git names its pages) and
//! OUT_DIR/completions/{opsd.bash,_opsd,opsd.fish}. In the binary, not a separate program: a
//! separate example or binary is a second fat-LTO build of the package (about 10 minutes on 2 cores).

use crate::cli::Cli;
use crate::exit::Exit;
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

/// `opsd package-docs DIR`.
pub fn command(out: &Path) -> Exit {
    match write(out) {
        Ok(pages) => {
            eprintln!("opsd: {pages} man pages in {0}/man, completions in {0}/completions", out.display());
            Exit::Ok
        }
        Err(e) => {
            eprintln!("opsd: cannot write the man pages and completions into {}: {e}", out.display());
            Exit::Software
        }
    }
}

/// Write the pages and completions below `out`; how many pages.
pub fn write(out: &Path) -> std::io::Result<usize> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let pages = pages(&man, Cli::command(), "opsd")?;
    let mut cmd = visible(Cli::command());
    for (shell, file) in [(Shell::Bash, "opsd.bash"), (Shell::Zsh, "_opsd"), (Shell::Fish, "opsd.fish")] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "opsd", &mut buf);
        std::fs::write(completions.join(file), buf)?;
    }
    Ok(pages)
}

/// The top-level command without its hidden subcommands, for the completions (zsh's generator
/// would offer them).
fn visible(cmd: clap::Command) -> clap::Command {
    let subs: Vec<clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let args: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    let mut out = clap::Command::new("opsd").args(args).subcommands(subs);
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(leak(version.to_string()));
    }
    out
}

/// clap keeps names as &'static str; a command that exits soon can leak a few.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The page of `cmd` (named `name`), then those of its subcommands, recursively; how many.
fn pages(dir: &Path, cmd: clap::Command, name: &str) -> std::io::Result<usize> {
    let cmd = cmd.name(leak(name.to_string())).display_name(leak(name.replace('-', " ")));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1")
        .manual("opsd manual")
        .render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.1")), buf)?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        n += pages(dir, sub.clone(), &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_visible_command_gets_a_page_and_every_shell_a_completion() {
        let dir = tempfile::tempdir().unwrap();
        let n = super::write(dir.path()).unwrap();
        let man = dir.path().join("man");
        for page in ["opsd.1", "opsd-run.1", "opsd-lifecycle-status.1", "opsd-capacity-status.1"] {
            let text = std::fs::read_to_string(man.join(page)).unwrap();
            assert!(text.contains(".TH"), "{page}: {text}");
        }
        assert_eq!(std::fs::read_dir(&man).unwrap().count(), n);
        // The packagers' command is not the users'.
        assert!(!man.join("opsd-package-docs.1").exists());
        for file in ["opsd.bash", "_opsd", "opsd.fish"] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(file)).unwrap();
            assert!(text.contains("lifecycle") && !text.contains("package-docs"), "{file}");
        }
    }
}
