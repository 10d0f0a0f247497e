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
    fn invite_expiry_parses_units() {
        assert_eq!(ctl::parse_duration("90"), Ok(90));
        assert_eq!(ctl::parse_duration("30m"), Ok(1800));
        assert_eq!(ctl::parse_duration("24h"), Ok(86_400));
        assert_eq!(ctl::parse_duration("7d"), Ok(604_800));
        assert!(ctl::parse_duration("0").is_err());
        assert!(ctl::parse_duration("5x").is_err());
        assert!(ctl::parse_duration("h").is_err());
        assert!(ctl::parse_duration("99999999999999999d").is_err());
    }
}
