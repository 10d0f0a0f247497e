#!/usr/bin/env bash
# Installs what building, mounting and testing p2pfs need on Debian: a Rust toolchain (if
# cargo is missing), a C compiler, FUSE 3 (fusermount3 for mounts by non-root users) and the
# tools the tests use (iproute2 for network namespaces, iptables and conntrack for the NAT
# routers of tests/nat.rs, util-linux for setpriv and mount, e2fsprogs for the reference ext4
# of the conformance tests, rsync and attr (getfattr/setfattr) for the tests that copy trees,
# man-db to find the packaged man pages) and the linters .ci/run runs on the scripts
# (shellcheck, pyflakes3).
# With --test, also what only the tests need beyond that: headless Chromium and chromedriver
# (Debian's chromium and chromium-driver) for the dashboard's browser test (tests/web_ui.rs).
# .ci/run passes it; starting a node does not need it.
# Safe to run again: it installs only what is missing.
set -euo pipefail

for_tests=false
for arg in "$@"; do
    case $arg in
    --test) for_tests=true ;;
    *)
        echo "install-deps: unknown argument $arg (only --test)" >&2
        exit 2
        ;;
    esac
done

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v ip >/dev/null || need+=(iproute2)
command -v setpriv >/dev/null || need+=(util-linux)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v man >/dev/null || need+=(man-db) # tests/package.rs checks the man pages with man -w
command -v python3 >/dev/null || need+=(python3) # bench/scale's measuring half (stdlib only)
command -v ss >/dev/null || need+=(iproute2)      # bench/scale reads tcp_info with ss
command -v iptables >/dev/null || need+=(iptables)   # tests/nat.rs: the NAT routers
command -v conntrack >/dev/null || need+=(conntrack) # tests/nat.rs: NAT tables in failure reports
command -v shellcheck >/dev/null || need+=(shellcheck) # .ci/run lints every shell script
command -v pyflakes3 >/dev/null || need+=(pyflakes3)   # .ci/run lints bench/*.py
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)  # tests/conform_*: the reference ext4
command -v rsync >/dev/null || need+=(rsync)          # tests/rsync_ahax.rs
command -v getfattr >/dev/null || need+=(attr)        # xattr tests: getfattr/setfattr
if $for_tests; then
    command -v chromium >/dev/null || need+=(chromium)
    command -v chromedriver >/dev/null || need+=(chromium-driver)
fi
if ! command -v cargo >/dev/null && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
    need+=(rustup)
fi

if ((${#need[@]})); then
    echo "install-deps: installing ${need[*]}" >&2
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q "${need[@]}"
fi

if ! command -v cargo >/dev/null && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
    rustup default stable
fi
