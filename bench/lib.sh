# bench/lib.sh — the shell helpers the benchmark scripts share: logging, arithmetic, processes
# (running? stop by pid), mounts, /proc figures, `p2pfs-ctl status`, the report's machine facts,
# and a p2pfs cluster on loopback (init, start N nodes and wait until each sees the others
# alive, kill, stop). Sourced by bench/run, bench/scale, bench/namespace and bench/tahoe;
# bench/lib-tahoe.sh builds on it.
#
# The sourcing script sets, before sourcing:
#   BENCH_DIR  this file's directory (the script's own)
#   LOG_TAG    the prefix of its log lines: `[LOG_TAG HH:MM:SS] message`
# This file sets ROOT (the checkout) and WORK (bench/work). The cluster functions read
# P2PFS_BIN, CTL_BIN, RUN (the run dir), LOGS, REPLICAS, MOUNT_TIMEOUT (seconds for a node to
# mount and report its listen address), STOP_TIMEOUT (seconds for a node to exit) and
# ALIVE_TIMEOUT (seconds for every node to see the others alive).
# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are read by the scripts that source this file

ROOT=$(cd -- "$BENCH_DIR/.." && pwd -P)
WORK=$BENCH_DIR/work

# Every p2pfs process listens on loopback only, with mDNS off: this machine may only send
# traffic to 127.0.0.1. Never change these two.
P2PFS_LISTEN=/ip4/127.0.0.1/tcp/0
P2PFS_NO_MDNS=--no-mdns

# A command that fails unexpectedly names itself and its line (the scripts run with set -E, so
# this holds inside functions too).
trap 'echo "[$LOG_TAG] ERROR: command failed with status $? at line $LINENO: $BASH_COMMAND" >&2' ERR

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# ----------------------------------------------------------------------------
# Time and arithmetic
# ----------------------------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }
calc() { python3 -c "print($1)"; }
r1() { calc "round($1, 1)"; }
r2() { calc "round($1, 2)"; }

# json_get KEY — the field KEY of the JSON object on standard input.
json_get() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# ----------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------

# Is PID a live (non-zombie) process?
is_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# wait_gone PID SECS — wait up to SECS for PID to exit; fails if it still runs.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while is_running "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# wait_exit PID SECS — wait_gone, then reap PID (a child) and set WAIT_RC to its exit status.
WAIT_RC=""
wait_exit() {
    WAIT_RC=""
    wait_gone "$1" "$2" || return 1
    WAIT_RC=0
    wait "$1" 2>/dev/null || WAIT_RC=$?
}

# stop_pid PID SIG SECS — send SIG to PID (a child), give it SECS to go, then SIGKILL; reaps it.
# Fails if it took the SIGKILL.
stop_pid() {
    local pid=$1 sig=$2 secs=$3 rc=0
    # (stderr dropped: bash reports a job killed by a signal there)
    {
        if is_running "$pid"; then
            kill "-$sig" "$pid" || true
            if ! wait_gone "$pid" "$secs"; then
                rc=1
                kill -KILL "$pid" || true
                wait_gone "$pid" 10 || true
            fi
        fi
        is_running "$pid" || wait "$pid" || true
    } 2>/dev/null
    return "$rc"
}

# CPU seconds (user + system, all threads) PID has used.
cpu_secs() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"; }
# proc_kib PID FIELD — a /proc/PID/status field (VmRSS, VmHWM) in KiB; proc_mib: in MiB, 0.1.
proc_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
proc_mib() { awk -v f="$2:" '$1 == f { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"; }

show_log_tail() {
    [[ -n $1 && -f $1 ]] || return 0
    echo "---- last lines of $1 ----" >&2
    tail -n 30 "$1" >&2 || true
    echo "----" >&2
}

# ----------------------------------------------------------------------------
# Mounts
# ----------------------------------------------------------------------------

# /proc/mounts escapes space, tab, newline and backslash as octal.
mounts_escape() {
    local s=$1
    s=${s//\\/\\134}
    s=${s// /\\040}
    s=${s//$'\t'/\\011}
    s=${s//$'\n'/\\012}
    printf '%s' "$s"
}

# Prints the fstype of the mount at $1, or fails if nothing is mounted there.
mount_fstype() {
    local want
    want=$(mounts_escape "$1")
    awk -v m="$want" '$2 == m { t = $3 } END { if (t == "") exit 1; print t }' /proc/mounts
}
is_mounted() { mount_fstype "$1" >/dev/null; }
# Mount points under $1 (unescaped enough for our own paths, which have no specials).
mounts_under() { awk -v p="$(mounts_escape "$1")/" 'index($2, p) == 1 { print $2 }' /proc/mounts; }

# umount_path MNT — unmount, falling back to a lazy unmount.
umount_path() {
    local mnt=$1
    is_mounted "$mnt" || return 0
    timeout 15 umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    ! is_mounted "$mnt"
}

# remove_run_dir DIR — unmount everything under DIR, then delete it; if something stays
# mounted there, DIR is left alone (and this fails).
remove_run_dir() {
    local dir=$1 m left
    [[ -d $dir ]] || return 0
    while IFS= read -r m; do
        [[ -n $m ]] || continue
        umount_path "$m" || log "warning: could not unmount $m"
    done < <(mounts_under "$dir")
    left=$(mounts_under "$dir")
    if [[ -n $left ]]; then
        log "warning: still mounted under $dir, not deleting it: ${left//$'\n'/ }"
        return 1
    fi
    rm -rf --one-file-system "$dir"
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# ----------------------------------------------------------------------------
# The report's machine facts, p2pfs binaries
# ----------------------------------------------------------------------------

# machine_meta — `meta KEY VALUE` lines (tab-separated) of cores, cpu, memory and kernel.
machine_meta() {
    printf 'meta\tcores\t%s\n' "$(nproc)"
    printf 'meta\tcpu\t%s\n' "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'meta\tmemory\t%s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf 'meta\tkernel\t%s\n' "$(uname -r)"
}
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

# p2pfs_describe BIN ORIGINAL — "VERSION, ORIGINAL (modified DATE); source tree at commit C".
p2pfs_describe() {
    printf '%s, %s (modified %s); source tree at commit %s' \
        "$("$1" --version 2>/dev/null || echo '?')" "$2" \
        "$(date -u -r "$2" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')" \
        "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
}

# freeze_binaries — copy P2PFS_BIN and CTL_BIN into $RUN/bin and use those copies: a rebuild
# during the run must not mix versions.
freeze_binaries() {
    mkdir -p "$RUN/bin"
    cp "$P2PFS_BIN" "$RUN/bin/p2pfs"
    cp "$CTL_BIN" "$RUN/bin/p2pfs-ctl"
    P2PFS_BIN=$RUN/bin/p2pfs CTL_BIN=$RUN/bin/p2pfs-ctl
}

# ----------------------------------------------------------------------------
# p2pfs status
# ----------------------------------------------------------------------------

# p2pfs_status DATA_DIR PYTHON — `p2pfs-ctl status --json` of the node of DATA_DIR, then
# PYTHON with the reply as `s` (e.g. 'print(s["files"])'). Fails if the node does not answer.
p2pfs_status() {
    timeout 60 "$CTL_BIN" --data-dir "$1" status --json 2>/dev/null 9>&- 8>&- |
        python3 -c "import json, sys; s = json.load(sys.stdin); $2" 2>/dev/null
}

# Is $1 a TCP address on 127.0.0.1 (optionally with /p2p/<id>)?
is_loopback_addr() {
    [[ $1 =~ ^/ip4/127\.0\.0\.1/tcp/[0-9]+(/p2p/[1-9A-HJ-NP-Za-km-z]+)?$ ]]
}

# ----------------------------------------------------------------------------
# A p2pfs cluster on loopback: nodes 1..CLUSTER_N of one network. Node I has its data in
# $RUN/NAME-dataI, its mount at $RUN/mnt-NAMEI and its log in $LOGS/NAMEI.runK.log (K counts
# its starts); nodes 2.. bootstrap to node 1's first listen address. NODE_EXTRA[I] holds extra
# `p2pfs run` flags, separated by spaces. Hooks, called when defined: node_hook_started NAME
# PID DATA_DIR and node_hook_stopped NAME (bench/run records pids for its stale-run cleanup);
# cluster_hook_stuck when the nodes do not all see each other in time (before the error).
# ----------------------------------------------------------------------------
NODE_PID=() NODE_MNT=() NODE_DATA=() NODE_LOG=() NODE_STARTS=() NODE_EXTRA=()
CLUSTER_N=0
CLUSTER_NAME=""
CLUSTER_BOOTSTRAP=""  # node 1's listen address
CLUSTER_SPAWN_BATCH=0 # 0: nodes 2..N spawned at once; B: B at a time (see cluster_start)
CLUSTER_FORM=""       # a command that waits for the cluster to form instead of the default
CLUSTER_T0="" CLUSTER_T_NODE1="" CLUSTER_T_SPAWNED=""

# node_status_py I PYTHON — p2pfs_status of node I.
node_status_py() { p2pfs_status "${NODE_DATA[$1]}" "$2"; }

# node_replication I FIELD — replication.FIELD of node I's status (chunks_stored, ...).
node_replication() { node_status_py "$1" "print(s['replication']['$2'])"; }

node_alive_peers() {
    node_status_py "$1" 'print(sum(1 for p in s["peers"] if p["state"] == "alive"))' || echo -1
}

node_peer_summary() {
    node_status_py "$1" 'print(s["network"], [(p["peer_id"][-8:], p["state"]) for p in s["peers"]])' ||
        echo "no status (p2pfs-ctl does not answer)"
}

# cluster_init NAME N — N data dirs of one network (`p2pfs init`, one network key); not started.
cluster_init() {
    local name=$1 i key=$RUN/$1-network.key
    CLUSTER_NAME=$name CLUSTER_N=$2 CLUSTER_BOOTSTRAP=""
    NODE_PID=() NODE_MNT=() NODE_DATA=() NODE_LOG=() NODE_STARTS=() NODE_EXTRA=()
    for ((i = 1; i <= CLUSTER_N; i++)); do
        NODE_DATA[i]=$RUN/$name-data$i
        NODE_MNT[i]=$RUN/mnt-$name$i
        NODE_EXTRA[i]=""
        NODE_PID[i]=""
        mkdir -p "${NODE_MNT[i]}"
        "$P2PFS_BIN" init --data-dir "${NODE_DATA[i]}" --network-key "$key" \
            >"$LOGS/$name$i.init.log" 2>&1 9>&- 8>&- ||
            {
                show_log_tail "$LOGS/$name$i.init.log"
                die "p2pfs init of $name $i failed"
            }
    done
}

# node_spawn I — start node I in the background (no waiting; no other process is started, so
# that a spawn of many nodes takes as little time as it can).
node_spawn() {
    local i=$1 args
    NODE_STARTS[i]=$((${NODE_STARTS[i]:-0} + 1))
    NODE_LOG[i]=$LOGS/$CLUSTER_NAME$i.run${NODE_STARTS[i]}.log
    args=(run --data-dir "${NODE_DATA[i]}" --mount "${NODE_MNT[i]}"
        --listen "$P2PFS_LISTEN" "$P2PFS_NO_MDNS" --replicas "$REPLICAS")
    # shellcheck disable=SC2206 # NODE_EXTRA holds flags separated by spaces
    args+=(${NODE_EXTRA[i]})
    if ((i > 1)); then
        is_loopback_addr "$CLUSTER_BOOTSTRAP" || die "bad bootstrap address '$CLUSTER_BOOTSTRAP'"
        args+=(--bootstrap "$CLUSTER_BOOTSTRAP")
    fi
    RUST_BACKTRACE=1 "$P2PFS_BIN" "${args[@]}" >"${NODE_LOG[i]}" 2>&1 9>&- 8>&- &
    NODE_PID[i]=$!
    if declare -F node_hook_started >/dev/null; then
        node_hook_started "$CLUSTER_NAME$i" "${NODE_PID[i]}" "${NODE_DATA[i]}"
    fi
}

# node_wait_up I — wait until node I (still running) has its FUSE mount and reports listen
# addresses, every one on 127.0.0.1; sets NODE_ADDR to the first.
NODE_ADDR=""
node_wait_up() {
    local i=$1 deadline=$((SECONDS + MOUNT_TIMEOUT)) fstype="" addrs="" a label="p2pfs $CLUSTER_NAME $1"
    NODE_ADDR=""
    until fstype=$(mount_fstype "${NODE_MNT[i]}") &&
        addrs=$(node_status_py "$i" 'print("\n".join(s["listen_addrs"]))') && [[ -n $addrs ]]; do
        if ! is_running "${NODE_PID[i]}"; then
            show_log_tail "${NODE_LOG[i]}"
            die "$label exited (log: ${NODE_LOG[i]})"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "${NODE_LOG[i]}"
            die "timed out after ${MOUNT_TIMEOUT}s waiting for $label to mount ${NODE_MNT[i]} and report a listen address (log: ${NODE_LOG[i]})"
        fi
        sleep 0.05
    done
    case $fstype in
        fuse | fuse.*) ;;
        *) die "${NODE_MNT[i]} is mounted with fstype '$fstype', expected a FUSE mount" ;;
    esac
    while IFS= read -r a; do
        is_loopback_addr "$a" || die "$label listens on $a, which is not 127.0.0.1: stopping (only loopback traffic is allowed here)"
    done <<<"$addrs"
    NODE_ADDR=$(head -n 1 <<<"$addrs")
}

# node_start I — start node I and wait until it is up (node_wait_up).
node_start() {
    local i=$1
    if is_mounted "${NODE_MNT[i]}"; then die "${NODE_MNT[i]} is already mounted"; fi
    node_spawn "$i"
    node_wait_up "$i"
    ((i > 1)) || CLUSTER_BOOTSTRAP=$NODE_ADDR
    log "p2pfs $CLUSTER_NAME $i (pid ${NODE_PID[i]}) mounted, listens on $NODE_ADDR${NODE_EXTRA[i]:+ (${NODE_EXTRA[i]})}"
}

# The nodes do not all see each other in time: what each sees, then the caller's hook.
cluster_stuck() {
    local i
    for ((i = 1; i <= CLUSTER_N; i++)); do
        [[ -z ${NODE_PID[i]} ]] || echo "$CLUSTER_NAME $i: $(node_peer_summary "$i")" >&2
    done
    if declare -F cluster_hook_stuck >/dev/null; then cluster_hook_stuck; fi
}

# node1_wait_sees K — node 1 lists K peers alive.
node1_wait_sees() {
    local k=$1 deadline=$((SECONDS + ALIVE_TIMEOUT)) c
    while true; do
        c=$(node_alive_peers 1)
        ((c >= k)) && return 0
        if ((SECONDS >= deadline)); then
            cluster_stuck
            die "node 1 sees $c peers alive after ${ALIVE_TIMEOUT}s, expected $k"
        fi
        sleep 0.2
    done
}

# cluster_wait_alive — every running node sees every other running node alive.
cluster_wait_alive() {
    local i up=0 ok t0=$SECONDS deadline=$((SECONDS + ALIVE_TIMEOUT))
    for ((i = 1; i <= CLUSTER_N; i++)); do [[ -z ${NODE_PID[i]} ]] || up=$((up + 1)); done
    while true; do
        ok=1
        for ((i = 1; i <= CLUSTER_N; i++)); do
            [[ -n ${NODE_PID[i]} ]] || continue
            if ! is_running "${NODE_PID[i]}"; then
                show_log_tail "${NODE_LOG[i]}"
                die "p2pfs $CLUSTER_NAME $i exited (log: ${NODE_LOG[i]})"
            fi
            [[ $(node_alive_peers "$i") == $((up - 1)) ]] || {
                ok=0
                break
            }
        done
        ((ok)) && break
        if ((SECONDS >= deadline)); then
            cluster_stuck
            die "timed out after ${ALIVE_TIMEOUT}s waiting for every node to see $((up - 1)) peers alive"
        fi
        sleep 0.2
    done
    log "p2pfs: every node sees $((up - 1)) peers alive (after $((SECONDS - t0)) s)"
}

# cluster_start — start nodes 1..CLUSTER_N and wait until every node sees the others alive.
# Node 1 first, until it is up (mounted, a loopback listen address, which the others bootstrap
# to); then nodes 2..N: all at once (CLUSTER_SPAWN_BATCH=0), or B at a time, each batch once
# node 1 sees the previous ones alive; then the wait: CLUSTER_FORM if set (its status is
# returned), else every node up and cluster_wait_alive. Sets CLUSTER_T0 (node 1 spawned),
# CLUSTER_T_NODE1 (node 1 up) and CLUSTER_T_SPAWNED (the last node spawned), epoch seconds.
cluster_start() {
    local i j last
    CLUSTER_T0=$(now)
    node_spawn 1
    node_wait_up 1
    CLUSTER_BOOTSTRAP=$NODE_ADDR
    CLUSTER_T_NODE1=$(now)
    log "p2pfs $CLUSTER_NAME 1 up in $(r2 "$CLUSTER_T_NODE1 - $CLUSTER_T0") s, listening on $CLUSTER_BOOTSTRAP; spawning nodes 2..$CLUSTER_N"
    if ((CLUSTER_SPAWN_BATCH == 0)); then
        for ((i = 2; i <= CLUSTER_N; i++)); do node_spawn "$i"; done
    else
        for ((i = 2; i <= CLUSTER_N; i += CLUSTER_SPAWN_BATCH)); do
            last=$((i + CLUSTER_SPAWN_BATCH - 1 < CLUSTER_N ? i + CLUSTER_SPAWN_BATCH - 1 : CLUSTER_N))
            for ((j = i; j <= last; j++)); do node_spawn "$j"; done
            ((last == CLUSTER_N)) || node1_wait_sees $((last - 1))
        done
    fi
    CLUSTER_T_SPAWNED=$(now)
    if [[ -n $CLUSTER_FORM ]]; then
        "$CLUSTER_FORM"
        return
    fi
    for ((i = 2; i <= CLUSTER_N; i++)); do
        node_wait_up "$i"
        log "p2pfs $CLUSTER_NAME $i (pid ${NODE_PID[i]}) mounted, listens on $NODE_ADDR${NODE_EXTRA[i]:+ (${NODE_EXTRA[i]})}"
    done
    cluster_wait_alive
}

# proc_stop TYPE LABEL PID MNT LOG [strict] — stop one filesystem process (TYPE "p2pfs":
# SIGTERM, it unmounts itself and must exit 0; "reference": umount, then its session loop
# ends), escalating (SIGTERM, SIGKILL, umount, umount -l) if that does not work. With
# "strict", a p2pfs node that does not follow that contract is an error.
proc_stop() {
    local type=$1 label=$2 pid=$3 mnt=$4 logf=$5 strict=${6:-}
    if [[ -n $pid ]] && is_running "$pid"; then
        if [[ $type == p2pfs ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        else
            umount_path "$mnt" || true
        fi
        if wait_exit "$pid" "$STOP_TIMEOUT"; then
            if [[ $type == p2pfs && $WAIT_RC != 0 ]]; then
                [[ $strict == strict ]] && show_log_tail "$logf" && die "$label exited with status $WAIT_RC on SIGTERM (expected 0; log: $logf)"
                log "warning: $label exited with status $WAIT_RC on SIGTERM"
            fi
        else
            log "warning: $label (pid $pid) did not exit within ${STOP_TIMEOUT}s; killing it"
            stop_pid "$pid" TERM 5 || true
            if [[ $strict == strict ]]; then
                umount_path "$mnt" || true
                show_log_tail "$logf"
                die "$label did not stop within ${STOP_TIMEOUT}s (log: $logf)"
            fi
        fi
    elif [[ -n $pid ]]; then
        wait "$pid" 2>/dev/null || true
        if [[ $strict == strict ]]; then
            umount_path "$mnt" || true
            show_log_tail "$logf"
            die "$label (pid $pid) had already exited before it was stopped (log: $logf)"
        fi
    fi
    if is_mounted "$mnt"; then
        if [[ $type == p2pfs && $strict == strict ]]; then
            umount_path "$mnt" || true
            die "$label exited but left $mnt mounted"
        fi
        umount_path "$mnt" || log "warning: could not unmount $mnt"
    fi
}

node_stopped() {
    NODE_PID[$1]=""
    if declare -F node_hook_stopped >/dev/null; then node_hook_stopped "$CLUSTER_NAME$1"; fi
}

# node_stop I [strict] — SIGTERM (see proc_stop).
node_stop() {
    local i=$1 pid=${NODE_PID[$1]:-}
    [[ -n $pid ]] || return 0
    NODE_PID[i]=""
    proc_stop p2pfs "p2pfs $CLUSTER_NAME $i" "$pid" "${NODE_MNT[i]}" "${NODE_LOG[i]}" "${2:-}"
    node_stopped "$i"
}

# Stop every node that is up, last first (strict in the normal path, not from a trap).
cluster_stop_all() {
    local i
    for ((i = CLUSTER_N; i >= 1; i--)); do node_stop "$i" "${1:-}"; done
}

# node_kill I — kill -9 node I, reap it and detach its mount. Fails if it survives.
node_kill() {
    local i=$1 pid=${NODE_PID[$1]:-} rc=0
    [[ -n $pid ]] || return 0
    NODE_PID[i]=""
    # (stderr dropped: bash reports a job killed by a signal there)
    {
        kill -KILL "$pid" || true
        if wait_gone "$pid" "$STOP_TIMEOUT"; then wait "$pid" || true; else rc=1; fi
    } 2>/dev/null
    umount_path "${NODE_MNT[i]}" || umount -l "${NODE_MNT[i]}" 2>/dev/null || true
    node_stopped "$i"
    return "$rc"
}

# node_kill_all I... — kill -9 all of them first (so none spends time on the others' deaths),
# then reap each and detach its mount.
node_kill_all() {
    local i
    for i in "$@"; do [[ -z ${NODE_PID[i]:-} ]] || kill -KILL "${NODE_PID[i]}" 2>/dev/null || true; done
    for i in "$@"; do node_kill "$i" || true; done
}

# cluster_kill_all — node_kill_all of every node still running.
cluster_kill_all() {
    local i up=()
    for ((i = 1; i <= CLUSTER_N; i++)); do [[ -z ${NODE_PID[i]:-} ]] || up+=("$i"); done
    ((${#up[@]})) || return 0
    log "killing the nodes of the p2pfs $CLUSTER_NAME cluster (kill -9), detaching their mounts"
    node_kill_all "${up[@]}"
}
