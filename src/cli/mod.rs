//! The command lines of the two binaries, as clap definitions: [`p2pfs`] for `p2pfs` and [`ctl`]
//! for `p2pfs-ctl`. The binaries (src/bin/) parse with them and run the commands; the packaging
//! asset generator (packaging/gen_assets.rs) renders man pages and shell completions from them.

pub mod ctl;
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
