//! The Debian package, installed for real on this machine.
//!
//! `packaging/build-deb --debug` packages the binaries under test (seconds: no release build),
//! `dpkg -i` installs the .deb, and the test checks what a user gets: `/usr/bin/p2pfs --version`
//! and `/usr/bin/p2pfs-ctl --version` from the package, a man page for every command and
//! subcommand (`man -w` finds them), bash, zsh and fish completions, both systemd units
//! (`systemd-analyze verify`), /etc/default/p2pfs as a conffile. Then `dpkg --purge` removes it
//! and the test checks that nothing of it is left. A guard purges on drop, so a failing test
//! leaves the machine as it found it too.
//!
//! Needs root, dpkg and fuse3 (packaging/install-deps.sh), like CI has; build-deb installs
//! cargo-deb if it is missing (a few minutes, once per machine). The test refuses to run when a
//! p2pfs package or /usr/bin/p2pfs is already there: it would replace and then remove it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PKG: &str = "p2pfs";
/// Written before `dpkg -i` and removed after the purge: an installed p2pfs package with this
/// file beside it was left by a run of this test that was killed, and may be purged.
const MARKER: &str = "/var/tmp/p2pfs-package-test.installed";
/// Paths the package installs outside its own directories: they must not exist beforehand.
const OWN_PATHS: &[&str] = &[
    "/usr/bin/p2pfs",
    "/usr/bin/p2pfs-ctl",
    "/etc/default/p2pfs",
    "/usr/lib/systemd/system/p2pfs.service",
    "/usr/lib/systemd/user/p2pfs.service",
];

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dpkg-query -W -f FORMAT PKG`, or None when dpkg knows no such package.
fn query(pkg: &str, format: &str) -> Option<String> {
    let out = run(Command::new("dpkg-query").args(["-W", "-f", format, pkg]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed(pkg: &str) -> bool {
    query(pkg, "${Status}").is_some_and(|s| s == "install ok installed")
}

fn purge() -> Output {
    run(Command::new("dpkg").args(["--purge", PKG]))
}

/// Purges the package on drop (a failing test included) unless `finish` did.
struct Installation {
    done: bool,
}

impl Installation {
    fn begin() -> Installation {
        fs::write(
            MARKER,
            "installed by tests/package.rs; removed when it purges p2pfs\n",
        )
        .expect("write the marker");
        Installation { done: false }
    }

    fn finish(mut self) {
        self.done = true;
        let out = purge();
        assert!(out.status.success(), "dpkg --purge p2pfs: {}", text(&out));
        let _ = fs::remove_file(MARKER);
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        if !self.done {
            let out = purge();
            if out.status.success() {
                let _ = fs::remove_file(MARKER);
            } else {
                eprintln!("cleanup: dpkg --purge p2pfs failed: {}", text(&out));
            }
        }
    }
}

/// Every path below `roots` whose name mentions p2pfs (symlinks not followed).
fn p2pfs_paths(roots: &[&str]) -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, found: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().contains("p2pfs") {
                found.insert(path.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    for r in roots {
        walk(Path::new(r), &mut found);
    }
    found
}

/// The system state the package's maintainer scripts touch (deb-systemd-helper's state, enable
/// and mask links) and its conffile.
const STATE_ROOTS: &[&str] = &["/etc/systemd", "/var/lib/systemd", "/etc/default"];

/// `p2pfs-config-show` for `p2pfs config show`, and so on: the man page of `cmd` and every
/// subcommand, as the generator names them.
fn man_page_names(cmd: clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, names: &mut Vec<String>) {
        names.push(cmd.get_display_name().unwrap_or(cmd.get_name()).to_string());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, names);
        }
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut names = Vec::new();
    walk(&cmd, &mut names);
    names
}

fn preconditions() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test installs a .deb: run it as root (.ci/run does)"
    );
    assert!(
        run(Command::new("dpkg").arg("--version")).status.success(),
        "this test needs dpkg (Debian)"
    );
    assert!(
        installed("fuse3"),
        "the package depends on fuse3: run packaging/install-deps.sh first"
    );
    if query(PKG, "${Status}").is_some_and(|s| !s.contains("not-installed")) {
        assert!(
            Path::new(MARKER).exists(),
            "a p2pfs package is installed on this machine ({:?}); this test would replace and \
             then remove it: `dpkg --purge p2pfs` first if it may go",
            query(PKG, "${Status} ${Version}")
        );
        eprintln!("purging the p2pfs package a killed run of this test left installed");
        let out = purge();
        assert!(out.status.success(), "dpkg --purge p2pfs: {}", text(&out));
        let _ = fs::remove_file(MARKER);
    }
    for p in OWN_PATHS {
        assert!(
            fs::symlink_metadata(p).is_err(),
            "{p} exists, not from a package: installing the .deb would replace it"
        );
    }
}

#[test]
fn deb_installs_runs_and_purges_cleanly() {
    preconditions();
    let version = env!("CARGO_PKG_VERSION");
    let state_before = p2pfs_paths(STATE_ROOTS);

    // Build the package from the binaries this test run built.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_p2pfs"))
        .parent()
        .expect("binary dir")
        .to_path_buf();
    assert_eq!(
        Path::new(env!("CARGO_BIN_EXE_p2pfs-gen-assets")).parent(),
        Some(bin_dir.as_path())
    );
    let out_dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let stdout = run_ok(
        Command::new(root.join("packaging/build-deb"))
            .arg("--debug")
            .arg("--output")
            .arg(out_dir.path())
            .env("P2PFS_DEB_BIN_DIR", &bin_dir)
            .env_remove("P2PFS_DEB_PROFILE"),
    );
    eprintln!("build-deb --debug took {:?}", started.elapsed());
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default());
    assert!(
        deb.is_file() && deb.starts_with(out_dir.path()),
        "build-deb printed {stdout:?}, not a .deb in {}",
        out_dir.path().display()
    );
    assert!(deb.extension().is_some_and(|e| e == "deb"), "{deb:?}");

    // Its control fields, before anything is installed.
    let field = |name: &str| {
        run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), PKG);
    let deb_version = field("Version");
    assert!(
        deb_version.starts_with(&format!("{version}-")),
        "package version {deb_version}, crate version {version}"
    );
    let depends = field("Depends");
    assert!(
        depends.split(',').any(|d| d.trim().starts_with("fuse3")),
        "Depends: {depends}"
    );
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert!(!field("Maintainer").is_empty());

    // Install it.
    let installation = Installation::begin();
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(
        query(PKG, "${Status} ${Version}").as_deref(),
        Some(format!("install ok installed {deb_version}").as_str()),
        "dpkg does not list p2pfs as installed"
    );
    let listed: BTreeSet<PathBuf> = run_ok(Command::new("dpkg").args(["-L", PKG]))
        .lines()
        .map(PathBuf::from)
        .collect();
    let files: Vec<&PathBuf> = listed.iter().filter(|p| p.is_file()).collect();

    // The installed commands are the package's, and run.
    for (bin, want) in [
        ("/usr/bin/p2pfs", format!("p2pfs {version}")),
        ("/usr/bin/p2pfs-ctl", format!("p2pfs-ctl {version}")),
    ] {
        assert!(listed.contains(Path::new(bin)), "dpkg -L lacks {bin}");
        assert_eq!(
            run_ok(Command::new("dpkg").args(["-S", bin])).trim(),
            format!("{PKG}: {bin}"),
            "{bin} does not belong to the package"
        );
        let md = fs::symlink_metadata(bin).unwrap();
        assert!(md.is_file(), "{bin} is not a regular file");
        let got = run_ok(Command::new(bin).arg("--version"));
        assert_eq!(got.trim(), want, "{bin} --version");
        let help = run_ok(Command::new(bin).arg("--help"));
        assert!(help.contains("Usage:"), "{bin} --help: {help}");
    }
    let bins: Vec<&PathBuf> = files
        .iter()
        .copied()
        .filter(|p| p.starts_with("/usr/bin"))
        .collect();
    assert_eq!(
        bins.len(),
        2,
        "the package has exactly the two commands in /usr/bin: {bins:?}"
    );

    // A man page for every command and subcommand, gzipped, that man finds.
    let mut pages = man_page_names(p2pfs::cli::p2pfs_command());
    pages.extend(man_page_names(p2pfs::cli::ctl_command()));
    assert!(
        pages.contains(&"p2pfs-config-show".to_string()),
        "{pages:?}"
    );
    assert!(
        pages.contains(&"p2pfs-ctl-volume-share".to_string()),
        "{pages:?}"
    );
    for page in &pages {
        let path = PathBuf::from(format!("/usr/share/man/man1/{page}.1.gz"));
        assert!(listed.contains(&path), "dpkg -L lacks {}", path.display());
        let roff = run_ok(Command::new("gzip").arg("-dc").arg(&path));
        assert!(
            roff.contains(&format!(".TH {page} 1")),
            "{} is no man page of {page}:\n{roff}",
            path.display()
        );
        if Path::new("/usr/bin/man").exists() {
            let found = run_ok(Command::new("man").args(["-w", page]));
            assert_eq!(Path::new(found.trim()), path, "man -w {page}");
        }
    }
    let man_files = files
        .iter()
        .filter(|p| p.starts_with("/usr/share/man"))
        .count();
    assert_eq!(man_files, pages.len(), "man pages: {files:?}");

    // Shell completions where bash-completion, zsh and fish look for them.
    for cmd in ["p2pfs", "p2pfs-ctl"] {
        let bash = PathBuf::from(format!("/usr/share/bash-completion/completions/{cmd}"));
        let zsh = PathBuf::from(format!("/usr/share/zsh/vendor-completions/_{cmd}"));
        let fish = PathBuf::from(format!("/usr/share/fish/vendor_completions.d/{cmd}.fish"));
        for p in [&bash, &zsh, &fish] {
            assert!(listed.contains(p), "dpkg -L lacks {}", p.display());
        }
        let registered = run_ok(
            Command::new("bash")
                .arg("-c")
                .arg(format!("source {} && complete -p {cmd}", bash.display())),
        );
        assert!(
            registered.contains(&format!(" {cmd}")),
            "bash completion of {cmd}: {registered}"
        );
        let z = fs::read_to_string(&zsh).unwrap();
        assert!(
            z.starts_with(&format!("#compdef {cmd}")),
            "{}",
            zsh.display()
        );
        let f = fs::read_to_string(&fish).unwrap();
        assert!(
            f.contains(&format!("complete -c {cmd} ")),
            "{}",
            fish.display()
        );
    }

    // The systemd units run the installed binary; systemd finds nothing wrong with them.
    let system_unit = Path::new("/usr/lib/systemd/system/p2pfs.service");
    let user_unit = Path::new("/usr/lib/systemd/user/p2pfs.service");
    for unit in [system_unit, user_unit] {
        assert!(listed.contains(unit), "dpkg -L lacks {}", unit.display());
        let u = fs::read_to_string(unit).unwrap();
        assert!(
            u.contains("\nExecStart=/usr/bin/p2pfs mount ${P2PFS_MOUNT} $P2PFS_ARGS\n"),
            "{}:\n{u}",
            unit.display()
        );
    }
    assert!(
        fs::read_to_string(system_unit)
            .unwrap()
            .contains("EnvironmentFile=-/etc/default/p2pfs")
    );
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let runtime = tempfile::tempdir().unwrap();
        for (unit, user) in [(system_unit, false), (user_unit, true)] {
            let mut cmd = Command::new("systemd-analyze");
            if user {
                cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
            }
            let out = run(cmd.arg("verify").arg(unit));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && !stderr.contains("p2pfs.service:"),
                "systemd-analyze verify {}: {}",
                unit.display(),
                text(&out)
            );
        }
    }
    let conffiles = query(PKG, "${Conffiles}").unwrap_or_default();
    assert!(
        conffiles.contains("/etc/default/p2pfs"),
        "conffiles: {conffiles}"
    );
    let defaults = fs::read_to_string("/etc/default/p2pfs").unwrap();
    assert!(
        defaults.contains("\nP2PFS_MOUNT=/srv/p2pfs\n"),
        "{defaults}"
    );
    assert!(listed.contains(Path::new("/usr/share/doc/p2pfs/README.md")));

    // Purge: nothing of the package is left, not even the state its scripts kept.
    installation.finish();
    assert!(!installed(PKG), "p2pfs still installed after the purge");
    assert!(
        query(PKG, "${Status}").is_none_or(|s| s.contains("not-installed")),
        "dpkg still knows p2pfs: {:?}",
        query(PKG, "${Status}")
    );
    for f in &files {
        assert!(
            fs::symlink_metadata(f).is_err(),
            "{} is left after the purge",
            f.display()
        );
    }
    assert_eq!(
        p2pfs_paths(STATE_ROOTS),
        state_before,
        "the purge left p2pfs state behind"
    );
    assert!(!Path::new(MARKER).exists());
}
