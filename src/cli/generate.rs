//! The hidden `roundhouse generate` subcommand: writes roundhouse(1) and the shell completions
//! into a directory for the Debian package (systemd/debian/build-deb). Hidden from `--help`, the
//! man page and the completions, which describe the command line users have.

use std::io;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Subcommand, ValueEnum};
use clap_complete::Shell;

use super::{Cli, man};

// Added to `Cli` by `main.rs` only. A plain comment, not a doc comment: clap would take a doc
// comment here for the about text of the command it is added to.
#[derive(Subcommand)]
pub enum Packaging {
    /// Write generated documentation into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// What to write.
        what: Generated,
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
}

/// What `roundhouse generate` writes.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Generated {
    /// roundhouse.1
    Man,
    /// roundhouse.bash, _roundhouse (zsh) and roundhouse.fish
    Completions,
}

/// The shells completions are generated for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes `what` into `dir`; returns the files written.
pub fn generate(what: Generated, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    match what {
        Generated::Man => {
            let path = dir.join("roundhouse.1");
            std::fs::write(&path, man::roundhouse_1())?;
            Ok(vec![path])
        }
        Generated::Completions => SHELLS
            .iter()
            .map(|shell| clap_complete::generate_to(*shell, &mut Cli::command(), "roundhouse", dir))
            .collect(),
    }
}

/// The completion script for `shell`, as [`generate`] writes it.
pub fn completion(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "roundhouse", &mut out);
    String::from_utf8(out).expect("clap_complete writes UTF-8")
}
