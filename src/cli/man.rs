//! The man pages of `p2pfs` and `p2pfs-ctl`, rendered from the clap definitions
//! (clap_mangen): one page per command and subcommand, named as `man` looks them up
//! (p2pfs-config-show.1 for `p2pfs config show`). `p2pfs man` prints or installs them; the
//! packaging asset generator (packaging/gen_assets.rs) writes them into the .deb.

use std::io;

use roff::{Roff, bold, roman};

/// Every page, as (file name, roff text): `p2pfs.1`, `p2pfs-mount.1`, ..., `p2pfs-ctl.1`, ...
pub fn pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (cmd, extra) in [
        (super::p2pfs_command(), p2pfs_sections as fn() -> Roff),
        // Its exit codes (`--help` shows them after the options) are the EXIT STATUS section.
        (
            super::ctl_command().after_help(None::<&'static str>),
            ctl_sections,
        ),
    ] {
        // Build first: that propagates global flags (p2pfs-ctl's --data-dir) and sets each
        // subcommand's display name (p2pfs-config-show) and bin name (p2pfs config show).
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        page(&cmd, Some(extra), &mut out)?;
    }
    Ok(out)
}

fn page(
    cmd: &clap::Command,
    extra: Option<fn() -> Roff>,
    out: &mut Vec<(String, Vec<u8>)>,
) -> io::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("p2pfs {version}"))
        .manual("p2pfs manual");
    let mut text = Vec::new();
    man.render(&mut text)?;
    let mut tail = extra.map(|f| f()).unwrap_or_default();
    see_also(cmd, &mut tail);
    tail.to_writer(&mut text)?;
    out.push((man.get_filename(), text));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, None, out)?;
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
        "The node's data dir, as --data-dir. Without either, every command uses \
         $XDG_DATA_HOME/p2pfs (~/.local/share/p2pfs).",
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
    for line in super::ctl::EXIT_CODES.lines().skip(1) {
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

#[cfg(test)]
mod tests {
    /// A page for each command and subcommand, `p2pfs man` among them.
    #[test]
    fn pages_cover_every_subcommand() {
        let pages = super::pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for name in [
            "p2pfs.1",
            "p2pfs-mount.1",
            "p2pfs-man.1",
            "p2pfs-reset.1",
            "p2pfs-ctl.1",
            "p2pfs-ctl-get.1",
            "p2pfs-ctl-volume-share.1",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let (_, mount) = pages.iter().find(|(n, _)| n == "p2pfs-mount.1").unwrap();
        let text = String::from_utf8_lossy(mount);
        assert!(text.contains(".TH p2pfs-mount 1"), "{text}");
        assert!(text.contains("allow\\-non\\-empty"), "{text}");
    }
}
