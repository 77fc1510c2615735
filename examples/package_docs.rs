//! The man pages and shell completions of the Debian package, generated from the clap definitions
//! (`opsd::cli::Cli`), so they cannot drift from `--help`. Run by `scripts/package`:
//!
//!   cargo run --example package_docs -- OUT_DIR
//!
//! writes OUT_DIR/man/opsd.1 plus one page per subcommand (opsd-run.1, opsd-lifecycle-status.1, …,
//! as git names its pages) and OUT_DIR/completions/{opsd.bash,_opsd,opsd.fish}.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/package".into()));
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = opsd::cli::Cli::command();
    let pages = pages(&man, cmd.clone(), "opsd")?;
    let mut cmd = cmd;
    for (shell, file) in [(Shell::Bash, "opsd.bash"), (Shell::Zsh, "_opsd"), (Shell::Fish, "opsd.fish")] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "opsd", &mut buf);
        std::fs::write(completions.join(file), buf)?;
    }
    eprintln!("package_docs: {pages} man pages in {}, completions in {}", man.display(), completions.display());
    Ok(())
}

/// The page of `cmd` (named `name`), then those of its subcommands, recursively; how many.
fn pages(dir: &Path, cmd: clap::Command, name: &str) -> std::io::Result<usize> {
    // clap keeps names as &'static str; a generator that exits soon can leak a few.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
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
