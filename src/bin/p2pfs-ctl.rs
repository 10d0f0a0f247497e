//! `p2pfs-ctl`: talk to a running node over its control socket.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Parser;
use p2pfs::namespace::volume::Role;
use p2pfs::node::control::{self, ControlError, Reply, Request, Status, transfer};

// The command line (flags, subcommands, help texts) is defined in src/cli/ctl.rs.
use p2pfs::cli::ctl::{AdminCommand, Cli, Command, VolumeCommand};

// Exit codes, as listed in `p2pfs::cli::ctl::EXIT_CODES` (shown by --help); 2 is clap's.
const EXIT_ERROR: u8 = 1;
/// Bad usage: clap's, and a node name that names no certified node or several.
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;
const EXIT_IO: u8 = 4;
/// `health` found chunks short of R copies even counting claims it could not check now (or
/// fewer live nodes hold chunks than R).
const EXIT_UNHEALTHY: u8 = 5;
/// `leave` could not hand every chunk off.
const EXIT_LEAVE_SHORT: u8 = 6;

/// "degraded: 1 of 3 copies (1 live node holds chunks)", or nothing when R copies can be made.
fn degraded(copies: u32, replicas: u32, holding: u64) -> Option<String> {
    (copies < replicas).then(|| {
        format!(
            "degraded: {copies} of {replicas} copies ({holding} live node{} hold{} chunks)",
            if holding == 1 { "" } else { "s" },
            if holding == 1 { "s" } else { "" }
        )
    })
}

/// The invite token of the node at `data_dir`: its network key (read from the data dir, as this
/// user can) and the addresses and peer id it reports.
fn invite(
    data_dir: &std::path::Path,
    status: &Status,
    expires: Option<u64>,
) -> Result<String, String> {
    let config = p2pfs::node::config::Config::load(data_dir).map_err(|e| e.to_string())?;
    let key = p2pfs::identity::NetworkKey::load(&config.network_key_path(data_dir))
        .map_err(|e| e.to_string())?;
    if status.listen_addrs.is_empty() {
        return Err("the node listens on no address yet; try again in a moment".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let invite = p2pfs::identity::Invite {
        network_key: key,
        bootstrap: status
            .listen_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", status.peer_id))
            .collect(),
        inviter: status.peer_id.clone(),
        expires: expires.map(|e| now.saturating_add(e)),
        certified: None,
    };
    Ok(invite.encode())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A span of seconds, roughly: `40 s`, `12 min`, `5 h`, `3 d`.
fn span(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// A time (unix seconds) relative to now: `5 min ago`, `in 23 h`.
fn when(at: u64, now: u64) -> String {
    if at <= now {
        format!("{} ago", span(now - at))
    } else {
        format!("in {}", span(at - now))
    }
}

fn print_invites(invites: &[p2pfs::node::control::InviteInfo]) {
    let now = now_unix();
    println!(
        "{:<12}  {:<7}  {:<12}  {:<12}  state",
        "id", "role", "made", "expires"
    );
    for i in invites {
        let state = match &i.used_by_name {
            // Names are what the joining node said: escaped like file names.
            Some(name) => format!("used by {}", p2pfs::cli::ctl::escape_name(name.as_bytes())),
            None => i.state.clone(),
        };
        println!(
            "{:<12}  {:<7}  {:<12}  {:<12}  {state}",
            i.id,
            i.role,
            when(i.made_at, now),
            i.expires.map_or("never".to_string(), |t| when(t, now)),
        );
    }
}

fn print_members(members: &[p2pfs::node::control::MemberInfo], ids: bool) {
    let now = now_unix();
    let width = if ids { 52 } else { 24 };
    println!(
        "{:<width$}  {:<12}  {:<16}  {:<24}  {:<12}  state",
        if ids { "peer" } else { "name" },
        "user",
        "role",
        "admitted by",
        "since"
    );
    for m in members {
        let role = if m.admin {
            format!("{}, admin", m.role)
        } else {
            m.role.clone()
        };
        let node = if ids {
            m.peer_id.clone()
        } else {
            p2pfs::cli::ctl::escape_name(m.name.as_bytes())
        };
        println!(
            "{node:<width$}  {:<12}  {role:<16}  {:<24}  {:<12}  {}",
            &m.user[..m.user.len().min(12)],
            p2pfs::cli::ctl::escape_name(m.admitted_by_name.as_bytes()),
            when(m.since, now),
            m.state
        );
    }
}

/// The `membership:` line of the text status.
fn membership_line(a: &p2pfs::node::control::AdmissionStatus) -> String {
    let founder = a
        .founder
        .as_deref()
        .map(|f| &f[..f.len().min(12)])
        .unwrap_or_default();
    match a.mode.as_str() {
        "certified" => format!(
            "certified (founder {founder}), this node: {}{}",
            a.role.as_deref().unwrap_or("no certificate"),
            if a.admin { ", admin" } else { "" }
        ),
        "joining" => format!(
            "joining a certified network (founder {founder}): waiting for the inviting node to admit this one"
        ),
        _ => "key only (every holder of the network key is a member)".to_string(),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// How each node of a status is shown: its peer id with `--ids`, else its display label (its
/// name, with a short peer id when several nodes claim it), by peer id.
fn peer_labels(s: &Status, ids: bool) -> HashMap<String, String> {
    let nodes = std::iter::once((s.peer_id.as_str(), s.name.as_str())).chain(
        s.peers
            .iter()
            .map(|p| (p.peer_id.as_str(), p.name.as_str())),
    );
    if ids {
        nodes
            .map(|(id, _)| (id.to_string(), id.to_string()))
            .collect()
    } else {
        p2pfs::cluster::names::labels(nodes)
    }
}

/// A peer's connection kinds for the `peers` table: `-` when not connected.
fn connection_column(kinds: &str) -> &str {
    if kinds.is_empty() { "-" } else { kinds }
}

fn print_status(s: &Status, ids: bool) {
    let labels = peer_labels(s, ids);
    let label = |id: &String| labels.get(id).cloned().unwrap_or_else(|| id.clone());
    if s.name.is_empty() {
        println!("p2pfs {} node {}", s.version, s.peer_id);
    } else {
        println!("p2pfs {} node {} ({})", s.version, s.name, s.peer_id);
    }
    println!("  mount:       {}", s.mount);
    println!(
        "  network:     {} (key fingerprint {})",
        s.network, s.network_fingerprint
    );
    if s.paused {
        println!("  paused:      no peer connections, no sync (p2pfs-ctl resume)");
    }
    if s.limits != p2pfs::net::bandwidth::Limits::default() {
        use p2pfs::net::bandwidth::show_rate;
        let l = &s.limits;
        println!(
            "  bandwidth:   up {}, down {}; per peer up {}, down {}",
            show_rate(l.upload),
            show_rate(l.download),
            show_rate(l.peer_upload),
            show_rate(l.peer_download)
        );
    }
    if !s.listen_addrs.is_empty() {
        println!("  listening:   {}", s.listen_addrs.join(", "));
    }
    let reach = &s.reachability;
    println!(
        "  reachable:   {}{}{}",
        match reach.state.as_str() {
            "public" => "public",
            "private" if reach.addrs.is_empty() => {
                "private (behind a NAT or firewall), and no relay: only members it dials reach it"
            }
            "private" => "private (behind a NAT or firewall: reached through relays)",
            _ => "unknown (not tested yet)",
        },
        if reach.addrs.is_empty() {
            String::new()
        } else {
            format!(" at {}", reach.addrs.join(", "))
        },
        if reach.relaying {
            "; relaying for members"
        } else {
            ""
        }
    );
    println!("  membership:  {}", membership_line(&s.admission));
    if let Some(r) = &s.admission.last_refusal {
        println!(
            "  refused:     by {} {} s ago: {}",
            label(&r.peer),
            r.secs_ago,
            p2pfs::cli::ctl::escape_name(r.reason.as_bytes())
        );
    }
    println!("  peers:       {}", s.peers.len());
    for p in &s.peers {
        println!(
            "    {} {} (seen {:.1} s ago, {} free{}) {}",
            label(&p.peer_id),
            p.state,
            p.last_seen_ms as f64 / 1000.0,
            human_bytes(p.free_bytes),
            if p.connection.is_empty() {
                String::new()
            } else {
                format!(", {}", p.connection)
            },
            p.addrs.join(", ")
        );
    }
    let other_rule = s
        .peers
        .iter()
        .filter(|p| {
            // Live ones, as repair counts them: a dead or departed peer places nothing.
            matches!(p.state.as_str(), "alive" | "suspect" | "offline" | "paused")
                && p.placement_rule != s.placement_rule
        })
        .count();
    if other_rule > 0 {
        println!(
            "  warning:     {other_rule} peer(s) place chunks by another rule than this node's \
             ({}): run the same p2pfs version on every node",
            s.placement_rule
        );
    }
    let r = &s.replication;
    if let Some(d) = degraded(r.copies, r.factor, r.holding_nodes) {
        println!("  durability:  {d}");
    }
    println!(
        "  replication: factor {}, {} chunks stored ({}), {} under-replicated, {} queued for repair",
        r.factor,
        r.chunks_stored,
        human_bytes(r.bytes_stored),
        r.under_replicated,
        r.repair_queue
    );
    if !r.failed_holders.is_empty() {
        println!(
            "  failed proofs: {} (claims not counted): {}",
            r.failed_holders.len(),
            r.failed_holders
                .iter()
                .map(label)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let c = &s.cache;
    let lookups = c.hits + c.misses;
    let rate = if lookups == 0 {
        0.0
    } else {
        100.0 * c.hits as f64 / lookups as f64
    };
    println!(
        "  cache:       {} of {}, {} hits / {} misses ({rate:.0}% hits)",
        human_bytes(c.bytes),
        human_bytes(c.capacity),
        c.hits,
        c.misses
    );
    let r = &s.retention;
    println!(
        "  retention:   {}; {} earlier version{} kept, {} chunks ({}) held here only for them",
        if r.keep_secs == 0 {
            "off".to_string()
        } else {
            format!(
                "{} days{}{}",
                format_days(r.keep_secs),
                if r.max_versions > 0 {
                    format!(", at most {} versions per file", r.max_versions)
                } else {
                    String::new()
                },
                if r.volumes_with_own_policy > 0 {
                    format!(" ({} volumes set their own)", r.volumes_with_own_policy)
                } else {
                    String::new()
                }
            )
        },
        r.kept_versions,
        if r.kept_versions == 1 { "" } else { "s" },
        r.retained_chunks,
        human_bytes(r.retained_bytes)
    );
    let g = &s.gc;
    println!(
        "  gc:          {} unreferenced chunks ({}), {} deleted, {} tombstones, {} expired (grace {} s)",
        g.unreferenced_chunks,
        if g.collecting {
            "collecting"
        } else {
            "paused: a member is not alive"
        },
        g.deleted_chunks,
        g.tombstones,
        g.expired_tombstones,
        g.grace_secs
    );
    println!("  files:       {}", s.files);
    let h = &s.hostile;
    let offences: u64 = h.offences.values().sum();
    if offences > 0 || !h.blocked.is_empty() {
        let kinds: Vec<String> = h
            .offences
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "  hostile:     {offences} offences by {} peers ({}), {} disconnects, {} blocked now",
            h.offending_peers,
            kinds.join(", "),
            h.disconnects,
            h.blocked.len()
        );
        for b in &h.blocked {
            println!("    blocked {} for {} s more", b.peer_id, b.secs_left);
        }
    }
    // Shared flushes are routine; the other refusals are worth a line.
    let refused: Vec<String> = h
        .refused
        .iter()
        .filter(|(k, n)| **n > 0 && k.as_str() != "sync_shared")
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !refused.is_empty() {
        println!("  refused:     {}", refused.join(", "));
    }
    if s.refused_names > 0 {
        println!(
            "  refused:     {} peer announcements named invalidly (name ignored)",
            s.refused_names
        );
    }
    if s.rejected_entries > 0 {
        println!(
            "  rejected:    {} namespace entries refused (bad signature or author)",
            s.rejected_entries
        );
    }
    if s.held_entries.dropped > 0 {
        println!(
            "  held:        {} entries of unknown volumes dropped over the bounds ({} held, {} bytes)",
            s.held_entries.dropped, s.held_entries.entries, s.held_entries.bytes
        );
    }
}

fn control_failed(e: ControlError) -> ExitCode {
    eprintln!("p2pfs-ctl: {e}");
    ExitCode::from(match e {
        ControlError::NotRunning(_) => EXIT_NOT_RUNNING,
        _ => EXIT_IO,
    })
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn finish_bar(bar: &indicatif::ProgressBar, bytes: u64, started: std::time::Instant) {
    if bar.is_hidden() {
        return;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprintln!(
        "{} in {secs:.1} s ({}/s)",
        human_bytes(bytes),
        human_bytes((bytes as f64 / secs) as u64)
    );
}

fn put(data_dir: &std::path::Path, local: &std::path::Path, path: &str) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let mut file = match std::fs::File::open(local) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("p2pfs-ctl: {}: {e}", local.display());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let meta = match file.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(m) if m.is_dir() => {
            eprintln!(
                "p2pfs-ctl: {} is a directory: put -r copies a whole tree",
                local.display()
            );
            return ExitCode::from(EXIT_ERROR);
        }
        Ok(_) => {
            eprintln!("p2pfs-ctl: {}: not a regular file", local.display());
            return ExitCode::from(EXIT_ERROR);
        }
        Err(e) => {
            eprintln!("p2pfs-ctl: {}: {e}", local.display());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // When PATH names a directory, the node puts the file in it under this name.
    let name = local.file_name().and_then(|n| n.to_str());
    let bar = progress_bar(meta.len(), path);
    let started = std::time::Instant::now();
    let reply = control::put(
        data_dir,
        path,
        name,
        meta.permissions().mode() & 0o7777,
        meta.len(),
        &mut file,
        |sent| bar.set_position(sent),
    );
    match reply {
        Ok(Reply::Done { .. }) => {
            finish_bar(&bar, meta.len(), started);
            ExitCode::SUCCESS
        }
        Ok(Reply::Error { message }) => {
            bar.abandon();
            eprintln!("p2pfs-ctl: the node refused: {message}");
            ExitCode::from(EXIT_ERROR)
        }
        Ok(other) => {
            eprintln!("p2pfs-ctl: the node answered out of protocol: {other:?}");
            ExitCode::from(EXIT_IO)
        }
        Err(e) => {
            bar.abandon();
            control_failed(e)
        }
    }
}

/// A failed transfer's message and exit code.
fn transfer_failed(e: transfer::TransferError) -> ExitCode {
    match e {
        transfer::TransferError::Control(e) => control_failed(e),
        transfer::TransferError::Usage(message) => {
            eprintln!("p2pfs-ctl: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        e => {
            eprintln!("p2pfs-ctl: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn get(data_dir: &std::path::Path, path: &[u8], local: &std::path::Path) -> ExitCode {
    let bar = progress_bar(0, &p2pfs::cli::ctl::escape_name(path));
    let started = std::time::Instant::now();
    let progress = |got, total| {
        bar.set_length(total);
        bar.set_position(got);
    };
    let result = if local.as_os_str() == "-" {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        match control::get(data_dir, path, &mut out, progress) {
            Ok(Ok(size)) => Ok(size),
            Ok(Err(message)) => Err(transfer::TransferError::Refused(message)),
            Err(e) => Err(e.into()),
        }
    } else {
        transfer::get_destination(path, local)
            .and_then(|local| transfer::get_file(data_dir, path, &local, progress))
    };
    match result {
        Ok(size) => {
            finish_bar(&bar, size, started);
            ExitCode::SUCCESS
        }
        Err(e) => {
            bar.abandon();
            transfer_failed(e)
        }
    }
}

/// `put -r` and `get -r`: one progress bar over the bytes of the whole tree.
fn copy_tree(
    what: &str,
    copy: impl FnOnce(&mut dyn FnMut(u64, u64)) -> Result<transfer::TreeReport, transfer::TransferError>,
) -> ExitCode {
    let bar = progress_bar(0, what);
    let started = std::time::Instant::now();
    let result = copy(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    match result {
        Ok(r) => {
            finish_bar(&bar, r.bytes, started);
            for s in &r.skipped {
                eprintln!("p2pfs-ctl: skipped {s}");
            }
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!(
                    "{} files, {} directories, {} symlinks",
                    r.files, r.dirs, r.symlinks
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            bar.abandon();
            transfer_failed(e)
        }
    }
}

/// `leave`: asks the node to leave, shows the handoff's progress on a terminal, prints the
/// result; exits [`EXIT_LEAVE_SHORT`] when some chunks could not be handed off.
fn leave(data_dir: &std::path::Path) -> ExitCode {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "handing off [{bar:30}] {pos}/{len} copies pushed {elapsed}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    // The total is the most copies seen queued; the queue only shrinks within the handoff.
    let mut total = 0;
    let result = control::leave(data_dir, |to_push| {
        total = total.max(to_push);
        bar.set_length(total);
        bar.set_position(total - to_push);
    });
    bar.finish_and_clear();
    match result {
        Ok(Ok(r)) => {
            println!(
                "left the network: handed off {} of {} chunks, {} copies pushed, {} short",
                r.handed_off, r.chunks, r.copies_pushed, r.short
            );
            if !r.finished {
                println!(
                    "  the handoff hit its time limit: chunks not confirmed on their owners count as short"
                );
            }
            if r.holders_left == 0 && r.chunks > 0 {
                println!("  no other live node holds chunks: this node's copies left with it");
            } else if u64::from(r.replicas) > r.holders_left {
                println!(
                    "  {} live node{} hold{} chunks now: at most {} of {} copies each",
                    r.holders_left,
                    if r.holders_left == 1 { "" } else { "s" },
                    if r.holders_left == 1 { "s" } else { "" },
                    r.holders_left,
                    r.replicas
                );
            }
            if r.short > 0 || !r.finished {
                eprintln!(
                    "p2pfs-ctl: {} chunks were not handed off: they have fewer copies elsewhere, or none; run the node again (with other nodes live) to hand them off",
                    r.short
                );
                ExitCode::from(EXIT_LEAVE_SHORT)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(Err(message)) => {
            eprintln!("p2pfs-ctl: the node refused: {message}");
            ExitCode::from(EXIT_ERROR)
        }
        Err(e) => control_failed(e),
    }
}

/// `certify`: lists the members the node would certify, asks (on a terminal; `--yes`
/// otherwise), then has the node found the network and certify them.
fn certify(data_dir: &std::path::Path, yes: bool) -> ExitCode {
    use std::io::{BufRead, IsTerminal, Write};
    let plan = match control::call(data_dir, &Request::Certify { peers: None }) {
        Ok(Reply::Certify(plan)) => plan,
        Ok(Reply::Error { message }) => {
            eprintln!("p2pfs-ctl: the node refused: {message}");
            return ExitCode::from(EXIT_ERROR);
        }
        Ok(other) => {
            eprintln!("p2pfs-ctl: the node answered out of protocol: {other:?}");
            return ExitCode::from(EXIT_IO);
        }
        Err(e) => return control_failed(e),
    };
    let show = |m: &control::CertifyMember| {
        let name = if m.name.is_empty() {
            "(no name)"
        } else {
            &m.name
        };
        format!(
            "  {name:<20} {} user {} {}",
            m.peer_id,
            short_hex(&m.user),
            m.role
        )
    };
    println!(
        "this node (user {}) founds the network; live members:",
        short_hex(&plan.founder)
    );
    for m in &plan.members {
        println!("{}", show(m));
    }
    for m in &plan.uncertifiable {
        println!(
            "{}  cannot be certified: it announces no user (an older p2pfs); upgrade it and run certify again, or invite it",
            show(m)
        );
    }
    let n = plan.members.len() + 1;
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("p2pfs-ctl: not a terminal: pass --yes to certify these {n} nodes");
            return ExitCode::from(2);
        }
        print!("certify these {n} nodes and become the founder? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("p2pfs-ctl: nothing changed");
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let peers = plan.members.iter().map(|m| m.peer_id.clone()).collect();
    match control::call(data_dir, &Request::Certify { peers: Some(peers) }) {
        Ok(Reply::Certify(done)) => {
            println!(
                "founded a certified network: you (user {}) are its founder and admin",
                short_hex(&done.founder)
            );
            println!("certificates made: {}", done.members.len());
            for m in &done.members {
                println!("{}", show(m));
            }
            ExitCode::SUCCESS
        }
        Ok(Reply::Error { message }) => {
            eprintln!("p2pfs-ctl: the node refused: {message}");
            ExitCode::from(EXIT_ERROR)
        }
        Ok(other) => {
            eprintln!("p2pfs-ctl: the node answered out of protocol: {other:?}");
            ExitCode::from(EXIT_IO)
        }
        Err(e) => control_failed(e),
    }
}

/// The first 12 hex digits of a user id (as `p2pfs-ctl members` shows users).
fn short_hex(user: &str) -> &str {
    user.get(..12).unwrap_or(user)
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializes")
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(data_dir) = cli.data_dir.or_else(p2pfs::util::paths::default_data_dir) else {
        eprintln!("p2pfs-ctl: no data dir: pass --data-dir or set HOME");
        return ExitCode::from(EXIT_ERROR);
    };
    match &cli.command {
        Command::Put {
            local,
            path,
            recursive: false,
        } => return put(&data_dir, local, path),
        Command::Put { local, path, .. } => {
            return copy_tree(path, |progress| {
                transfer::put_tree(&data_dir, local, path, progress)
            });
        }
        Command::Get {
            path,
            local,
            recursive: false,
        } => {
            use std::os::unix::ffi::OsStrExt;
            return get(&data_dir, path.as_bytes(), local);
        }
        Command::Get { path, local, .. } => {
            let Some(path) = path.to_str() else {
                eprintln!("p2pfs-ctl: get -r takes a UTF-8 path");
                return ExitCode::from(EXIT_USAGE);
            };
            return copy_tree(path, |progress| {
                transfer::get_tree(&data_dir, path, local, progress)
            });
        }
        Command::Leave => return leave(&data_dir),
        Command::Certify { yes } => return certify(&data_dir, *yes),
        _ => {}
    }
    let request = match &cli.command {
        Command::Status { .. } | Command::Invite { .. } | Command::Peers { .. } => Request::Status,
        Command::Ls { path, .. } => Request::Ls { path: path.clone() },
        Command::Rm {
            path, purge: true, ..
        }
        | Command::Purge { path } => Request::Purge { path: path.clone() },
        Command::Rm {
            path, recursive, ..
        } => Request::Rm {
            path: path.clone(),
            recursive: *recursive,
        },
        Command::Retention {
            volume,
            days,
            max_versions,
            use_config,
            ..
        } => match retention_change(volume, *days, *max_versions, *use_config) {
            Ok(set) => Request::Retention { set },
            Err(message) => {
                eprintln!("p2pfs-ctl: {message}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Command::Df { .. } => Request::Df,
        Command::Health { .. } => Request::Health,
        Command::Put { .. } | Command::Get { .. } | Command::Leave | Command::Certify { .. } => {
            unreachable!("handled above")
        }
        Command::Where { path, .. } => Request::Where { path: path.clone() },
        Command::Invites {
            revoke: Some(id), ..
        } => Request::InviteRevoke { id: id.clone() },
        Command::Invites { revoke: None, .. } => Request::Invites,
        Command::Members { .. } => Request::Members,
        Command::Expel { node } => Request::Expel { node: node.clone() },
        Command::Admin { command } => match command {
            AdminCommand::Add { node } => Request::Admin {
                node: node.clone(),
                admin: true,
            },
            AdminCommand::Remove { node } => Request::Admin {
                node: node.clone(),
                admin: false,
            },
        },
        Command::Volume { command } => match command {
            VolumeCommand::List { .. } => Request::VolumeList,
            VolumeCommand::Create { name } => Request::VolumeCreate { name: name.clone() },
            VolumeCommand::Share {
                name,
                with,
                read_only,
            } => Request::VolumeShare {
                name: name.clone(),
                with: with.clone(),
                read_only: *read_only,
            },
            VolumeCommand::Unshare { name, with } => Request::VolumeUnshare {
                name: name.clone(),
                with: with.clone(),
            },
        },
        Command::Versions { path, .. } => Request::Versions { path: path.clone() },
        Command::Restore {
            path,
            version,
            at,
            to,
        } => Request::Restore {
            path: path.clone(),
            version: *version,
            at: at.clone(),
            to: to.clone(),
        },
        Command::Snapshot { volume, name, at } => Request::Snapshot {
            volume: volume.clone(),
            name: name.clone(),
            at: at.clone(),
        },
        Command::Snapshots { .. } => Request::Snapshots,
        Command::Pin { path } => Request::Pin { path: path.clone() },
        Command::Unpin { path } => Request::Unpin { path: path.clone() },
        Command::Pins { .. } => Request::Pins,
        Command::Web { .. } => Request::Web,
        Command::Limit {
            upload,
            download,
            peer_upload,
            peer_download,
            use_config,
            ..
        } => {
            let change = [upload, download, peer_upload, peer_download];
            let set = if change.iter().any(|c| c.is_some()) {
                // Unnamed limits stay as they are.
                let now = match control::call(
                    &data_dir,
                    &Request::Limit {
                        set: None,
                        use_config: false,
                    },
                ) {
                    Ok(Reply::Limits { limits, .. }) => limits,
                    Ok(other) => {
                        eprintln!("p2pfs-ctl: the node answered out of protocol: {other:?}");
                        return ExitCode::from(EXIT_IO);
                    }
                    Err(e) => return control_failed(e),
                };
                Some(p2pfs::net::bandwidth::Limits {
                    upload: upload.unwrap_or(now.upload),
                    download: download.unwrap_or(now.download),
                    peer_upload: peer_upload.unwrap_or(now.peer_upload),
                    peer_download: peer_download.unwrap_or(now.peer_download),
                })
            } else {
                None
            };
            Request::Limit {
                set,
                use_config: *use_config,
            }
        }
        Command::Pause => Request::Pause,
        Command::Resume => Request::Resume,
        Command::Conflicts { path, .. } => Request::Conflicts { path: path.clone() },
    };
    let timeout = match request {
        Request::Health | Request::Rm { .. } | Request::Restore { .. } => {
            std::time::Duration::from_secs(600)
        }
        _ => std::time::Duration::from_secs(30),
    };
    let reply = match control::call_within(&data_dir, &request, timeout) {
        Ok(r) => r,
        Err(e) => return control_failed(e),
    };
    match (cli.command, reply) {
        (Command::Status { json, ids }, Reply::Status(status)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("serializes")
                );
            } else {
                print_status(&status, ids);
            }
            ExitCode::SUCCESS
        }
        (
            Command::Where { json, ids, .. },
            Reply::Where {
                path,
                replicas,
                chunks,
            },
        ) => {
            if json {
                let out =
                    serde_json::json!({ "path": path, "replicas": replicas, "chunks": chunks });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).expect("serializes")
                );
            } else {
                let short = chunks
                    .iter()
                    .filter(|c| c.holders.len() < replicas as usize)
                    .count();
                println!(
                    "{}: {} chunks, {short} with fewer than {replicas} copies",
                    p2pfs::cli::ctl::escape_name(path.as_bytes()),
                    chunks.len()
                );
                for c in &chunks {
                    // Labels from the node; a node without names sends none: ids then.
                    let mut labels: HashMap<&String, &String> = HashMap::new();
                    if !ids {
                        labels.extend(c.owners.iter().zip(&c.owner_names));
                        labels.extend(c.holders.iter().zip(&c.holder_names));
                    }
                    let label = |id: &String| {
                        let name = labels.get(id).copied().unwrap_or(id);
                        match c.connections.get(id) {
                            Some(kinds) => format!("{name} ({kinds})"),
                            None => name.clone(),
                        }
                    };
                    let n = c.holders.len();
                    println!(
                        "  {}  {n} of {replicas} copies{}{}  owners {}",
                        &c.id[..16],
                        if c.unverified.is_empty() {
                            String::new()
                        } else {
                            format!(" (+{} unverified)", c.unverified.len())
                        },
                        if n < replicas as usize {
                            " (degraded)"
                        } else {
                            ""
                        },
                        c.owners.len(),
                    );
                    for o in &c.owners {
                        let mark = if c.holders.contains(o) {
                            "holds"
                        } else if c.unverified.contains(o) {
                            "unverified (busy or no answer)"
                        } else {
                            "MISSING"
                        };
                        println!("      owner {} {mark}", label(o));
                    }
                    for h in c.holders.iter().filter(|h| !c.owners.contains(h)) {
                        println!("      extra copy on {}", label(h));
                    }
                }
            }
            ExitCode::SUCCESS
        }
        (
            Command::Volume {
                command: VolumeCommand::List { json },
            },
            Reply::Volumes { volumes },
        ) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&volumes).expect("serializes")
                );
            } else {
                println!(
                    "{:<20} {:<24} {:<7} {:>6} {:>8}  id",
                    "name", "in the mount", "role", "files", "members"
                );
                for v in &volumes {
                    let role = match v.role {
                        Some(Role::Owner) => "owner",
                        Some(Role::Writer) => "writer",
                        Some(Role::Reader) => "reader",
                        None => "-",
                    };
                    let members = if v.members == 0 {
                        "all".to_string()
                    } else {
                        v.members.to_string()
                    };
                    // Volume names come from their owners' records: escaped like file names.
                    println!(
                        "{:<20} {:<24} {:<7} {:>6} {:>8}  {}",
                        p2pfs::cli::ctl::escape_name(v.name.as_bytes()),
                        p2pfs::cli::ctl::escape_name(v.dir.as_bytes()),
                        role,
                        v.files,
                        members,
                        v.id
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Volume { .. }, Reply::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        (Command::Invite { expires, role }, Reply::Status(status))
            if matches!(status.admission.mode.as_str(), "certified" | "joining") =>
        {
            let request = Request::Invite {
                role: role
                    .unwrap_or(p2pfs::admission::NodeRole::Storage)
                    .as_str()
                    .to_string(),
                expires_in: expires.0,
            };
            match control::call_within(&data_dir, &request, std::time::Duration::from_secs(30)) {
                Ok(Reply::Invite { token, id }) => {
                    println!("{token}");
                    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                        eprintln!(
                            "On the new machine: p2pfs mount DIR --join TOKEN (or p2pfs init --join TOKEN).\nIt admits one node, once (invite {id}: p2pfs-ctl invites). The token holds the network key: share it as you would the key."
                        );
                    }
                    ExitCode::SUCCESS
                }
                Ok(Reply::Error { message }) => {
                    eprintln!("p2pfs-ctl: the node refused: {message}");
                    ExitCode::from(EXIT_ERROR)
                }
                Ok(other) => {
                    eprintln!("p2pfs-ctl: the node answered out of protocol: {other:?}");
                    ExitCode::from(EXIT_IO)
                }
                Err(e) => control_failed(e),
            }
        }
        (Command::Invite { role: Some(_), .. }, Reply::Status(_)) => {
            eprintln!(
                "p2pfs-ctl: this network has no certificates (key only): its invites carry no role; run p2pfs-ctl certify first"
            );
            ExitCode::from(EXIT_ERROR)
        }
        (Command::Invite { expires, .. }, Reply::Status(status)) => {
            match invite(&data_dir, &status, expires.0) {
                Ok(token) => {
                    println!("{token}");
                    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                        eprintln!(
                            "On the new machine: p2pfs mount DIR --join TOKEN (or p2pfs init --join TOKEN).\nThe token holds the network key: share it as you would the key."
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("p2pfs-ctl: cannot make an invite: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        (Command::Peers { json, ids }, Reply::Status(status)) => {
            if json {
                print_json(&status.peers);
            } else if !ids {
                let labels = peer_labels(&status, false);
                println!(
                    "{:<24} {:<8} {:>12} {:>10} {:<12}  addresses",
                    "name", "state", "last seen", "free", "connection"
                );
                for p in &status.peers {
                    println!(
                        "{:<24} {:<8} {:>10.1} s {:>10} {:<12}  {}",
                        labels[&p.peer_id],
                        p.state,
                        p.last_seen_ms as f64 / 1000.0,
                        human_bytes(p.free_bytes),
                        connection_column(&p.connection),
                        p.addrs.join(", ")
                    );
                }
            } else {
                println!(
                    "{:<54} {:<8} {:>12} {:>10} {:<12}  addresses",
                    "peer", "state", "last seen", "free", "connection"
                );
                for p in &status.peers {
                    println!(
                        "{:<54} {:<8} {:>10.1} s {:>10} {:<12}  {}",
                        p.peer_id,
                        p.state,
                        p.last_seen_ms as f64 / 1000.0,
                        human_bytes(p.free_bytes),
                        connection_column(&p.connection),
                        p.addrs.join(", ")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Ls { json, .. }, Reply::Listing { entries }) => {
            if json {
                print_json(&entries);
            } else {
                for e in &entries {
                    let kind = match e.kind.as_str() {
                        "dir" => 'd',
                        "symlink" => 'l',
                        "fifo" => 'p',
                        "socket" => 's',
                        "char" => 'c',
                        "block" => 'b',
                        _ => '-',
                    };
                    // Names come from peers: never raw control characters on a terminal.
                    let bytes = e
                        .name_bytes
                        .as_deref()
                        .and_then(|h| hex::decode(h).ok())
                        .unwrap_or_else(|| e.name.clone().into_bytes());
                    println!(
                        "{kind}{:04o} {:>12} {}{}",
                        e.mode,
                        e.size,
                        p2pfs::cli::ctl::escape_name(&bytes),
                        if e.kind == "dir" { "/" } else { "" }
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Rm { purge: false, .. }, Reply::Done { .. }) => ExitCode::SUCCESS,
        (Command::Rm { .. } | Command::Purge { .. }, Reply::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        (Command::Retention { json, .. }, Reply::Retention { volumes }) => {
            if json {
                print_json(&volumes);
            } else {
                for v in &volumes {
                    let policy = if v.keep_secs == 0 {
                        "keeps no earlier versions".to_string()
                    } else {
                        format!(
                            "keeps earlier versions {} days{}",
                            format_days(v.keep_secs),
                            if v.max_versions > 0 {
                                format!(", at most {} per file", v.max_versions)
                            } else {
                                String::new()
                            }
                        )
                    };
                    let source = if v.source == "owner" {
                        "set by its owner"
                    } else {
                        "from this node's config"
                    };
                    println!(
                        "{:<20} {policy} ({source})",
                        if v.dir.is_empty() { "/" } else { &v.dir }
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Df { json }, Reply::Df(df)) => {
            if json {
                print_json(&df);
            } else {
                println!(
                    "{} live nodes, {} copies of every chunk wanted",
                    df.nodes, df.replicas
                );
                if let Some(d) = degraded(df.copies, df.replicas, df.holding_nodes) {
                    println!("  {d}");
                }
                println!("  capacity:    {}", human_bytes(df.capacity_bytes));
                println!("  free:        {}", human_bytes(df.free_bytes));
                println!(
                    "  usable:      {} more of files (free space / {} cop{} that can be made)",
                    human_bytes(df.usable_bytes),
                    df.copies,
                    if df.copies == 1 { "y" } else { "ies" }
                );
                println!("  stored here: {}", human_bytes(df.stored_here_bytes));
                println!(
                    "  of which {} only for {} earlier version{} kept (retention)",
                    human_bytes(df.retained_here_bytes),
                    df.kept_versions,
                    if df.kept_versions == 1 { "" } else { "s" }
                );
            }
            ExitCode::SUCCESS
        }
        (Command::Health { json }, Reply::Health(h)) => {
            if json {
                print_json(&h);
            } else {
                let degraded = degraded(h.copies, h.replicas, h.holding_nodes);
                if let Some(d) = &degraded {
                    println!("{d}");
                }
                if h.chunks == 0 {
                    println!("no chunks stored yet ({} live nodes)", h.nodes);
                } else if h.short_chunks == 0 {
                    println!(
                        "{}all {} chunks have {} copies ({} live nodes)",
                        if degraded.is_none() { "healthy: " } else { "" },
                        h.chunks,
                        h.replicas,
                        h.nodes
                    );
                } else {
                    println!(
                        "{} of {} chunks short of {} proven copies ({} on no live node, {} unverified: their holders were busy or did not answer; run again)",
                        h.short_chunks, h.chunks, h.replicas, h.missing_chunks, h.unverified_chunks
                    );
                    if !h.files.is_empty() {
                        println!("files affected:");
                    }
                    for f in &h.files {
                        println!("  {}", p2pfs::cli::ctl::escape_name(f.as_bytes()));
                    }
                }
            }
            // Unhealthy: a chunk short even counting claims that could not be checked now.
            if h.short_chunks <= h.unverified_chunks && h.files.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_UNHEALTHY)
            }
        }
        (Command::Invites { json, .. }, Reply::Invites { invites }) => {
            if json {
                print_json(&invites);
            } else {
                print_invites(&invites);
            }
            ExitCode::SUCCESS
        }
        (Command::Members { json, ids }, Reply::Members { members }) => {
            if json {
                print_json(&members);
            } else {
                print_members(&members, ids);
            }
            ExitCode::SUCCESS
        }
        (
            Command::Invites { .. } | Command::Expel { .. } | Command::Admin { .. },
            Reply::Done { message },
        ) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        (Command::Versions { json, .. }, Reply::Versions(list)) => {
            if json {
                print_json(&list);
            } else {
                print_versions(&list);
            }
            ExitCode::SUCCESS
        }
        (Command::Restore { .. }, Reply::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        (Command::Snapshot { .. }, Reply::Snapshot { path }) => {
            println!("{path}");
            ExitCode::SUCCESS
        }
        (Command::Snapshots { json }, Reply::Snapshots { snapshots }) => {
            if json {
                print_json(&snapshots);
            } else {
                for s in &snapshots {
                    let hidden = if s.visible { "" } else { "  (past retention)" };
                    println!("{}  {}  {}{hidden}", s.time, s.name, s.path);
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Pin { .. } | Command::Unpin { .. }, Reply::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        (
            Command::Web { json },
            Reply::Web {
                url,
                login_url,
                note,
            },
        ) => {
            if json {
                print_json(
                    &serde_json::json!({ "url": url, "login_url": login_url, "note": note }),
                );
            } else {
                println!("{url}");
                println!(
                    "open to log in (this link is this node's key to its dashboard): {login_url}"
                );
                if let Some(note) = note {
                    eprintln!("note: {note}");
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Pins { json }, Reply::Pins { pins }) => {
            if json {
                print_json(&pins);
            } else {
                for pin in &pins {
                    println!(
                        "/{}  {}",
                        p2pfs::cli::ctl::escape_name(pin.path.as_bytes()),
                        p2pfs::node::pins::describe(pin)
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (Command::Limit { json, .. }, Reply::Limits { limits, source }) => {
            if json {
                print_json(&serde_json::json!({ "limits": limits, "source": source }));
            } else {
                use p2pfs::net::bandwidth::show_rate;
                println!("upload:         {}", show_rate(limits.upload));
                println!("download:       {}", show_rate(limits.download));
                println!("per-peer up:    {}", show_rate(limits.peer_upload));
                println!("per-peer down:  {}", show_rate(limits.peer_download));
                println!(
                    "({})",
                    if source == "runtime" {
                        "set by p2pfs-ctl limit until the node restarts; --use-config goes back to config.toml's"
                    } else {
                        "from config.toml's [bandwidth] section"
                    }
                );
            }
            ExitCode::SUCCESS
        }
        (Command::Pause | Command::Resume, Reply::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        (Command::Conflicts { json, .. }, Reply::Conflicts { conflicts }) => {
            if json {
                print_json(&conflicts);
            } else {
                for c in &conflicts {
                    let of = c.of.as_deref().unwrap_or("(gone)");
                    println!(
                        "/{}  of /{}  {}  {}  {}",
                        p2pfs::cli::ctl::escape_name(c.path.as_bytes()),
                        p2pfs::cli::ctl::escape_name(of.as_bytes()),
                        p2pfs::cli::ctl::escape_name(c.node.as_bytes()),
                        c.time,
                        c.kind
                    );
                }
            }
            ExitCode::SUCCESS
        }
        (_, Reply::NoSuchNode { message }) => {
            eprintln!("p2pfs-ctl: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        (_, Reply::Error { message }) => {
            eprintln!("p2pfs-ctl: the node refused: {message}");
            ExitCode::from(EXIT_ERROR)
        }
        (_, other) => {
            eprintln!("p2pfs-ctl: the node answered out of protocol: {other:?}");
            ExitCode::from(EXIT_IO)
        }
    }
}

/// Days, as few digits as the value needs (`7`, `0.5`, `0.001`).
fn format_days(secs: u64) -> String {
    let days = secs as f64 / 86_400.0;
    let text = format!("{days:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The change `p2pfs-ctl retention` asks for, if any.
fn retention_change(
    volume: &Option<String>,
    days: Option<f64>,
    max_versions: Option<u32>,
    use_config: bool,
) -> Result<Option<p2pfs::node::control::RetentionChange>, String> {
    let changing = days.is_some() || max_versions.is_some() || use_config;
    let Some(volume) = volume else {
        return if changing {
            Err("name the volume to change: p2pfs-ctl retention VOLUME --days N".into())
        } else {
            Ok(None)
        };
    };
    if !changing {
        return Err(format!(
            "say what to change for {volume:?}: --days N, --max-versions M or --use-config"
        ));
    }
    if use_config {
        return Ok(Some(p2pfs::node::control::RetentionChange {
            volume: volume.clone(),
            policy: None,
        }));
    }
    let days = days.unwrap_or(p2pfs::namespace::retention::DEFAULT_KEEP_SECS as f64 / 86_400.0);
    if !days.is_finite() || !(0.0..=3650.0).contains(&days) {
        return Err(format!("--days must be between 0 and 3650, not {days}"));
    }
    Ok(Some(p2pfs::node::control::RetentionChange {
        volume: volume.clone(),
        policy: Some(p2pfs::namespace::RetentionPolicy::from_days(
            days,
            max_versions.unwrap_or(0),
        )),
    }))
}

/// `versions`: one line per version, oldest first, then the deletion if any.
fn print_versions(list: &p2pfs::fs::history::VersionList) {
    println!(
        "{} ({} version{} kept)",
        list.path,
        list.versions.len(),
        if list.versions.len() == 1 { "" } else { "s" }
    );
    for v in &list.versions {
        let size = if v.kind == "file" {
            human_bytes(v.size)
        } else {
            v.kind.clone()
        };
        println!(
            "{:>4}  {}  {:>10}  {:<16} by {:<16} {}{}",
            v.number,
            v.time,
            size,
            p2pfs::cli::ctl::escape_name(v.node.as_bytes()),
            p2pfs::cli::ctl::escape_name(v.author.as_bytes()),
            p2pfs::cli::ctl::escape_name(v.name.as_bytes()),
            if v.current {
                "  (current)"
            } else if v.replaced_file {
                "  (a file this one replaced: --to)"
            } else {
                ""
            }
        );
    }
    if let Some(d) = &list.deleted {
        println!(
            "   -  {}  deleted     {:<16} by {}",
            d.time,
            p2pfs::cli::ctl::escape_name(d.node.as_bytes()),
            p2pfs::cli::ctl::escape_name(d.author.as_bytes())
        );
    }
}
