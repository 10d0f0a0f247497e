//! `p2pfs-gen-assets DIR`: writes the packaging assets that are generated from the command-line
//! definitions in src/cli: man pages for `p2pfs`, `p2pfs-ctl` and each of their subcommands
//! (clap_mangen), and completions for bash, zsh and fish (clap_complete).
//!
//! ```text
//! DIR/man/p2pfs.1, p2pfs-mount.1, p2pfs-config-show.1, p2pfs-ctl.1, p2pfs-ctl-status.1, ...
//! DIR/completions/bash/p2pfs, p2pfs-ctl
//! DIR/completions/zsh/_p2pfs, _p2pfs-ctl
//! DIR/completions/fish/p2pfs.fish, p2pfs-ctl.fish
//! ```
//!
//! packaging/build-deb runs it; it is not part of the package (Cargo.toml lists the package's
//! files under `[package.metadata.deb]`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: p2pfs-gen-assets DIR (writes DIR/man and DIR/completions)");
        return ExitCode::from(2);
    };
    match generate(Path::new(dir)) {
        Ok(n) => {
            eprintln!("p2pfs-gen-assets: wrote {n} files below {dir}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("p2pfs-gen-assets: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every asset below `dir` (replacing what an earlier run left there); returns how many
/// files it wrote.
fn generate(dir: &Path) -> io::Result<usize> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        match fs::remove_dir_all(d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(d)?;
    }
    let mut written = man_pages(&man)?;
    for cmd in [p2pfs::cli::p2pfs_command(), p2pfs::cli::ctl_command()] {
        written += completion_files(cmd, &completions)?;
    }
    Ok(written)
}

/// Every man page (see `p2pfs::cli::man`), into `dir`.
fn man_pages(dir: &Path) -> io::Result<usize> {
    let pages = p2pfs::cli::man::pages()?;
    for (name, text) in &pages {
        write_file(&dir.join(name), text)?;
    }
    Ok(pages.len())
}

fn completion_files(mut cmd: clap::Command, dir: &Path) -> io::Result<usize> {
    let name = cmd.get_name().to_string();
    let mut written = 0;
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.as_str(), &mut out);
        let path: PathBuf = dir.join(sub).join(file);
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        write_file(&path, &out)?;
        written += 1;
    }
    Ok(written)
}

fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    f.write_all(data)?;
    Ok(())
}
