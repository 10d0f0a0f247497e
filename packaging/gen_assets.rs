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
use roff::{Roff, bold, roman};

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
    let mut written = 0;
    for (cmd, extra) in [
        (p2pfs::cli::p2pfs_command(), p2pfs_sections as fn() -> Roff),
        // Its exit codes (`--help` shows them after the options) are the EXIT STATUS section.
        (
            p2pfs::cli::ctl_command().after_help(None::<&'static str>),
            ctl_sections,
        ),
    ] {
        written += man_pages(cmd.clone(), &man, extra)?;
        written += completion_files(cmd, &completions)?;
    }
    Ok(written)
}

/// One page for `cmd` and one for each of its subcommands, recursively (named as `man` looks them
/// up: p2pfs-config-show.1 for `p2pfs config show`). `extra` adds sections to the top page.
fn man_pages(cmd: clap::Command, dir: &Path, extra: fn() -> Roff) -> io::Result<usize> {
    // Build first: that propagates global flags (p2pfs-ctl's --data-dir) and sets each
    // subcommand's display name (p2pfs-config-show) and bin name (p2pfs config show).
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = 0;
    page(&cmd, dir, Some(extra), &mut written)?;
    Ok(written)
}

fn page(
    cmd: &clap::Command,
    dir: &Path,
    extra: Option<fn() -> Roff>,
    written: &mut usize,
) -> io::Result<()> {
    let version = p2pfs_version();
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("p2pfs {version}"))
        .manual("p2pfs manual");
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render(&mut out)?;
    let mut tail = extra.map(|f| f()).unwrap_or_default();
    see_also(cmd, &mut tail);
    tail.to_writer(&mut out)?;
    write_file(&path, &out)?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, dir, None, written)?;
    }
    Ok(())
}

/// SEE ALSO: the parent page and the subcommands' pages.
fn see_also(cmd: &clap::Command, roff: &mut Roff) {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let mut refs: Vec<String> = Vec::new();
    if let Some((parent, _)) = name.rsplit_once('-')
        && name != "p2pfs-ctl"
    {
        refs.push(parent.to_string());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        refs.push(sub.get_display_name().unwrap_or(sub.get_name()).to_string());
    }
    match name {
        "p2pfs" => refs.push("p2pfs-ctl".into()),
        "p2pfs-ctl" => refs.push("p2pfs".into()),
        _ => {}
    }
    if refs.is_empty() {
        return;
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(r.as_str()));
        line.push(roman("(1)"));
    }
    roff.text(line);
}

/// ENVIRONMENT, FILES and EXIT STATUS of `p2pfs`.
fn p2pfs_sections() -> Roff {
    let mut r = Roff::default();
    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        "P2PFS_DATA_DIR",
        "The node's data dir, as --data-dir. Without either, init and run refuse; mount and \
         config show use $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).",
    );
    item(
        &mut r,
        "P2PFS_LOG",
        "What the node logs to standard error, as a tracing filter (default \
         info,fuser=error,libp2p_kad=error), e.g. debug or p2pfs::cluster::repair=debug.",
    );
    r.control("SH", ["FILES"]);
    item(
        &mut r,
        "~/.local/share/p2pfs/",
        "The default data dir: the node's keys, the network key, config.toml (every setting with \
         its default; p2pfs config show explains them), the chunk store, the namespace and the \
         control socket that p2pfs-ctl talks to.",
    );
    item(
        &mut r,
        "/etc/default/p2pfs",
        "Settings of the system service p2pfs.service: the mount path (P2PFS_MOUNT, default \
         /srv/p2pfs), the data dir (default /var/lib/p2pfs) and extra arguments.",
    );
    item(
        &mut r,
        "~/.config/p2pfs/p2pfs.env",
        "The same settings for the user service (systemctl --user), which mounts at ~/p2pfs by \
         default.",
    );
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "0 on success, and when a running node stops on SIGTERM or SIGINT (it unmounts first); \
         1 on an error, which is printed; 2 on bad usage.",
    )]);
    r
}

/// ENVIRONMENT and EXIT STATUS of `p2pfs-ctl`.
fn ctl_sections() -> Roff {
    let mut r = Roff::default();
    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        "P2PFS_DATA_DIR",
        "The data dir of the node to talk to, as --data-dir (default \
         $XDG_DATA_HOME/p2pfs, ~/.local/share/p2pfs). For the system service: \
         /var/lib/p2pfs, as root.",
    );
    r.control("SH", ["EXIT STATUS"]);
    // One list of the codes: the one `p2pfs-ctl --help` shows.
    for line in p2pfs::cli::ctl::EXIT_CODES.lines().skip(1) {
        if let Some((code, what)) = line.trim().split_once(' ') {
            item(&mut r, code, &format!("{}.", what.trim()));
        }
    }
    r
}

/// A tagged paragraph: `tag` in bold, `text` indented below it.
fn item(r: &mut Roff, tag: &str, text: &str) {
    r.control("TP", []);
    r.text([bold(tag)]);
    r.text([roman(text)]);
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

fn p2pfs_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
