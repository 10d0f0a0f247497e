//! Test harness for the p2pfs integration tests.
//!
//! A [`Node`] owns a private temporary directory holding the node's data dir,
//! its mountpoint and its log files. It can run `p2pfs init`, start
//! `p2pfs run` in the background, stop it with SIGTERM or SIGKILL, and it
//! always cleans up on drop (even when the test panicked): the node process is
//! SIGKILLed if still running, the FUSE mount is unmounted (`umount`, falling
//! back to `umount -l`) and any extra mounts the test registered (tmpfs) are
//! unmounted too. The temporary directory is only removed once nothing is
//! mounted below it any more.
//!
//! A node starts alone on loopback without mDNS unless given other run
//! arguments (`set_run_args`, `start_args`) or a launcher (`set_run_prefix`,
//! e.g. `nsenter` into a network namespace). A [`Cluster`] is N nodes sharing
//! one network key file, bootstrapped to the first, on loopback; it waits
//! until every node sees every other alive, and on drop kills and unmounts
//! them all (printing every node's status and log if the test panicked).
//!
//! [`netlab`] puts nodes into network namespaces of their own, on one bridge,
//! for tests that need a network between them (mDNS, partitions), or behind NAT routers.
//!
//! All tests need root (FUSE mounts, tmpfs mounts, setpriv, namespaces).
//!
//! The harness by concern: [`node`] (one node's process, control and status), [`cluster`]
//! (nodes of one network, status helpers), [`mounts`] (the mount table), [`process`]
//! (commands, child processes, polling), [`data`] (test data, comparisons, config edits),
//! [`netlab`] (network namespaces), [`rogue`] (the rogue peer process) and [`conform`] (the
//! mount against a reference ext4, operations under other credentials). Everything is
//! re-exported here, so a test says `use common::*`. Within the harness, uses run one way:
//! `process` and `data` at the bottom, then `mounts`, `node`, `cluster`, and `netlab`,
//! `rogue` and `conform` on top.

#![allow(dead_code)]

pub mod cluster;
pub mod conform;
pub mod data;
pub mod mounts;
pub mod netlab;
pub mod node;
pub mod process;
pub mod rogue;

// Not every test binary uses every part.
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use conform::*;
#[allow(unused_imports)]
pub use data::*;
#[allow(unused_imports)]
pub use mounts::*;
#[allow(unused_imports)]
pub use node::*;
#[allow(unused_imports)]
pub use process::*;
