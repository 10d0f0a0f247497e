//! The command lines of the two binaries, as clap definitions: [`p2pfs`] for `p2pfs` and [`ctl`]
//! for `p2pfs-ctl`. The binaries (src/bin/) parse with them and run the commands; the packaging
//! asset generator (packaging/gen_assets.rs) renders man pages and shell completions from them.

pub mod ctl;
pub mod man;
pub mod p2pfs;

/// The `clap::Command` of `p2pfs`, as it parses its arguments.
pub fn p2pfs_command() -> clap::Command {
    <self::p2pfs::Cli as clap::CommandFactory>::command()
}

/// The `clap::Command` of `p2pfs-ctl`, as it parses its arguments.
pub fn ctl_command() -> clap::Command {
    <self::ctl::Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks of both definitions (conflicting names, bad defaults, ...).
    #[test]
    fn definitions_are_consistent() {
        p2pfs_command().debug_assert();
        ctl_command().debug_assert();
    }

    /// Why a help text reads as cut off mid-sentence, if it does. clap drops the final period
    /// of a doc comment, so a complete text ends in a word, a `)` or a quote; one that ends in
    /// a possessive, an article or a conjunction, or in `,`/`:`/`;`, stopped
    /// mid-sentence (as `Added to the config's` did).
    fn unfinished(text: &str) -> Option<String> {
        const DANGLING: &[&str] = &[
            "a", "an", "the", "and", "or", "but", "e.g", "i.e", "is", "are", "than", "its",
            "their", "this", "your", "our",
        ];
        let text = text.trim();
        let first = text.chars().next()?;
        if !(first.is_uppercase() || first.is_ascii_digit() || "`$-[(".contains(first)) {
            return Some(format!("starts in lower case: {text:?}"));
        }
        let last_word = text
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("")
            .trim_end_matches('.');
        if text.ends_with([',', ':', ';', '-']) {
            return Some(format!("ends in punctuation that continues: {text:?}"));
        }
        if last_word.ends_with("'s") || DANGLING.contains(&last_word.to_lowercase().as_str()) {
            return Some(format!("ends mid-sentence ({last_word:?}): {text:?}"));
        }
        None
    }

    /// Every subcommand and every argument of both binaries has a help text, and none stops
    /// mid-sentence.
    #[test]
    fn every_help_text_is_complete() {
        fn walk(cmd: &clap::Command, path: &str, faults: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            match cmd.get_about() {
                None => faults.push(format!("{path}: no description")),
                Some(about) => {
                    faults.extend(unfinished(&about.to_string()).map(|f| format!("{path}: {f}")))
                }
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg.get_long_help().or(arg.get_help());
                match help {
                    None => faults.push(format!("{path} <{id}>: no help")),
                    Some(h) => faults
                        .extend(unfinished(&h.to_string()).map(|f| format!("{path} <{id}>: {f}"))),
                }
                if let Some(h) = arg.get_help() {
                    faults.extend(
                        unfinished(&h.to_string()).map(|f| format!("{path} <{id}> (short): {f}")),
                    );
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &path, faults);
            }
        }
        assert!(unfinished("Peer to dial at start. Added to the config's").is_some());
        assert!(unfinished("Copies of every chunk (default 3)").is_none());
        let mut faults = Vec::new();
        for mut cmd in [p2pfs_command(), ctl_command()] {
            cmd.build();
            walk(&cmd, "", &mut faults);
        }
        assert!(
            faults.is_empty(),
            "{} help texts:\n{}",
            faults.len(),
            faults.join("\n")
        );
    }

    #[test]
    fn names_are_escaped_for_the_terminal() {
        assert_eq!(ctl::escape_name(b"plain name.txt"), "plain name.txt");
        assert_eq!(ctl::escape_name("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(ctl::escape_name(b"caf\xe9.txt"), "caf\\xe9.txt");
        assert_eq!(
            ctl::escape_name(b"a\x1b[31mb\nc\td\re\x07\x7f"),
            "a\\x1b[31mb\\nc\\td\\re\\x07\\x7f"
        );
        assert_eq!(ctl::escape_name("x\u{85}y".as_bytes()), "x\\u{85}y");
        // A name that looks escaped stays apart from the name it looks like.
        assert_eq!(ctl::escape_name(b"a\\x1b"), "a\\\\x1b");
        assert_ne!(ctl::escape_name(b"a\\x1b"), ctl::escape_name(b"a\x1b"));
    }

    #[test]
    fn invite_expiry_parses_units() {
        assert_eq!(ctl::parse_duration("90"), Ok(90));
        assert_eq!(ctl::parse_duration("30m"), Ok(1800));
        assert_eq!(ctl::parse_duration("24h"), Ok(86_400));
        assert_eq!(ctl::parse_duration("7d"), Ok(604_800));
        assert!(ctl::parse_duration("0").is_err());
        assert!(ctl::parse_duration("5x").is_err());
        assert!(ctl::parse_duration("h").is_err());
        assert!(ctl::parse_duration("99999999999999999d").is_err());
        assert_eq!(ctl::parse_expiry("never"), Ok(ctl::Expiry(None)));
        assert_eq!(ctl::parse_expiry("1h"), Ok(ctl::Expiry(Some(3600))));
        assert!(ctl::parse_expiry("soon").is_err());
    }

    /// `p2pfs-ctl invite` without --expires makes a token that expires in a day.
    #[test]
    fn invite_expires_in_a_day_unless_told_never() {
        use clap::Parser;
        let expiry = |args: &[&str]| match ctl::Cli::try_parse_from(args).unwrap().command {
            ctl::Command::Invite { expires, .. } => expires,
            _ => unreachable!(),
        };
        assert_eq!(expiry(&["p2pfs-ctl", "invite"]), ctl::Expiry(Some(86_400)));
        assert_eq!(
            expiry(&["p2pfs-ctl", "invite", "--expires", "never"]),
            ctl::Expiry(None)
        );
    }
}
