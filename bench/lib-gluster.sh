# bench/lib-gluster.sh — a GlusterFS volume on loopback, for bench/run: one glusterd started
# directly (no systemd) with its own volfile and working directory, one `replica 3` volume on
# three bricks of this host, and FUSE mounts of it (a writer and a reader).
#
# The caller sets, before calling any function:
#   GLUSTER_DIR      a directory for glusterd's state, the bricks and the mounts (wiped by
#                    gluster_create)
#   GLUSTER_LOGS     where the logs go (kept by the caller)
#   GLUSTER_TIMEOUT  seconds to wait for glusterd, a brick or a mount (default 60)
# and sources bench/lib.sh first (log, die, show_log_tail, is_running, stop_pid, mount_fstype,
# umount_path). Optional hooks, called when defined: gluster_hook_started NAME PID ARG (ARG is
# an exact argument of the process's command line, for bench/run's stale-run cleanup) and
# gluster_hook_stopped NAME.
#
# Loopback only: glusterd binds 127.0.0.1 (`transport.socket.bind-address`, which it also
# hands to every brick process) with `transport.address-family inet`; the bricks are named by
# a host name that resolves to 127.0.0.1 (the CLI refuses `127.0.0.1` and `localhost`), which
# every client and brick then dials. gluster_check_loopback_only verifies it with ss.
#
# Every process is known by its pid: glusterd is our child (`-N`); the brick processes
# (glusterfsd) and the self-heal daemon (glustershd), which glusterd spawns as daemons, are read
# from `gluster volume status --xml`; each client is our child (`glusterfs -N`). Teardown
# stops each by that pid, never by name.
# shellcheck shell=bash
# shellcheck disable=SC2034,SC2153 # variables set here are read by the scripts that source this file; GLUSTER_DIR and GLUSTER_LOGS are set by them

GLUSTER_ADDR=127.0.0.1 # never change this: only loopback traffic is allowed
GLUSTER_PORT=24007     # glusterd's port (its clients and bricks fetch volfiles there)
GLUSTER_VOL=p2pfsbench
GLUSTER_TIMEOUT=${GLUSTER_TIMEOUT:-60}
GLUSTER_STOP_TIMEOUT=15
GLUSTER_HOSTS_MARK="# bench/lib-gluster.sh" # the /etc/hosts line, when one had to be added

declare -A GLUSTER_PID=()  # process name (glusterd, brick1.., shd, writer, reader) -> pid
declare -A GLUSTER_MNT=()  # client name -> mount point
declare -A GLUSTER_SOCK=() # process name -> the unix socket it was given (-S), removed at the end
GLUSTER_STARTED=()         # names, in start order
GLUSTER_HOST=""            # the bricks' host name (resolves to 127.0.0.1)
GLUSTER_HOSTS_LINE=""      # the /etc/hosts line this run added, if any
GLUSTER_BRICKS=()          # brick directories

gluster_cli() {
    timeout 120 gluster --mode=script --glusterd-sock="$GLUSTER_DIR/run/glusterd.socket" \
        --log-file="$GLUSTER_LOGS/cli.log" "$@" </dev/null 9>&- 8>&-
}

# ----------------------------------------------------------------------------
# Install: Debian's glusterfs-server, without letting the package start its own glusterd (which
# would listen on every interface): a policy-rc.d that denies service starts during the install.
# ----------------------------------------------------------------------------
gluster_ensure() {
    if command -v glusterd >/dev/null && command -v gluster >/dev/null && command -v glusterfs >/dev/null; then
        log "gluster: using $(glusterfs --version 2>/dev/null | head -n1)"
        return 0
    fi
    ((EUID == 0)) || die "glusterfs-server is missing and installing it needs root"
    command -v apt-get >/dev/null || die "glusterfs-server is missing and apt-get is not available"
    local policy=/usr/sbin/policy-rc.d added=0 alog=$GLUSTER_LOGS/apt.log
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# added by bench/lib-gluster.sh for the install; removed after it\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added=1
    fi
    log "gluster: installing glusterfs-server with apt-get (service starts denied meanwhile)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y glusterfs-server; } >"$alog" 2>&1 || {
        ((added == 0)) || rm -f "$policy"
        show_log_tail "$alog"
        die "apt-get install glusterfs-server failed (log: $alog)"
    }
    ((added == 0)) || rm -f "$policy"
    command -v glusterd >/dev/null || die "glusterd not found after installing glusterfs-server"
    log "gluster: installed $(glusterfs --version 2>/dev/null | head -n1)"
}

# ----------------------------------------------------------------------------
# The bricks' host name: the first of this machine's names whose every IPv4 address is
# 127.0.0.1; without one, a line `127.0.0.1 p2pfs-bench-gluster` is added to /etc/hosts for the
# run (gluster_stop_all removes it; so does the next run if this one was killed).
# ----------------------------------------------------------------------------
gluster_resolves_loopback() {
    local addrs
    addrs=$(getent ahostsv4 "$1" 2>/dev/null | awk '{print $1}' | sort -u) || return 1
    [[ $addrs == "$GLUSTER_ADDR" ]]
}

gluster_pick_host() {
    local name
    for name in "$(hostname 2>/dev/null)" "$(hostname -f 2>/dev/null)" localhost.localdomain localhost4; do
        [[ -n $name && $name != localhost && $name != "$GLUSTER_ADDR" ]] || continue
        if gluster_resolves_loopback "$name"; then
            GLUSTER_HOST=$name
            log "gluster: bricks named $GLUSTER_HOST (resolves to $GLUSTER_ADDR only)"
            return 0
        fi
    done
    GLUSTER_HOST=p2pfs-bench-gluster
    GLUSTER_HOSTS_LINE="$GLUSTER_ADDR $GLUSTER_HOST $GLUSTER_HOSTS_MARK $GLUSTER_DIR"
    printf '%s\n' "$GLUSTER_HOSTS_LINE" >>/etc/hosts
    gluster_resolves_loopback "$GLUSTER_HOST" || die "gluster: $GLUSTER_HOST does not resolve to $GLUSTER_ADDR after adding it to /etc/hosts"
    log "gluster: no host name of this machine resolves to $GLUSTER_ADDR only; added '$GLUSTER_HOSTS_LINE' to /etc/hosts for the run"
}

# gluster_remove_hosts_line [DIR] — delete the /etc/hosts line added for DIR (default: this run).
gluster_remove_hosts_line() {
    local dir=${1:-$GLUSTER_DIR} tmp
    grep -qF -- "$GLUSTER_HOSTS_MARK $dir" /etc/hosts 2>/dev/null || return 0
    tmp=$(mktemp)
    grep -vF -- "$GLUSTER_HOSTS_MARK $dir" /etc/hosts >"$tmp" || true
    cat "$tmp" >/etc/hosts # (in place: /etc/hosts may be a bind mount)
    rm -f "$tmp"
    [[ $dir != "$GLUSTER_DIR" ]] || GLUSTER_HOSTS_LINE=""
}

# ----------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------

# gluster_record NAME PID ARG [SOCKET]
gluster_record() {
    GLUSTER_PID[$1]=$2
    GLUSTER_STARTED+=("$1")
    if [[ -n ${4:-} ]]; then
        GLUSTER_SOCK[$1]=$4
        echo "$4" >>"$GLUSTER_DIR/sockets" # for gluster_cleanup_stale
    fi
    if declare -F gluster_hook_started >/dev/null; then gluster_hook_started "$1" "$2" "$3"; fi
}

gluster_forget() {
    unset 'GLUSTER_PID[$1]'
    if declare -F gluster_hook_stopped >/dev/null; then gluster_hook_stopped "$1"; fi
}

# gluster_arg_after PID FLAG — the argument that follows FLAG on PID's command line.
gluster_arg_after() {
    tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | awk -v f="$2" 'p { print; exit } $0 == f { p = 1 }'
}

# gluster_stop NAME [SIG] — stop one process by its pid: SIG (TERM), then SIGKILL after
# GLUSTER_STOP_TIMEOUT seconds.
gluster_stop() {
    local name=$1 sig=${2:-TERM} pid=${GLUSTER_PID[$1]:-}
    [[ -n $pid ]] || return 0
    if ! stop_pid "$pid" "$sig" "$GLUSTER_STOP_TIMEOUT"; then
        log "gluster: $name (pid $pid) did not stop within ${GLUSTER_STOP_TIMEOUT}s of SIG$sig; killed it with SIGKILL"
    fi
    gluster_forget "$name"
}

# The pids of every gluster process up (for the CPU figures).
gluster_pids() {
    local name
    for name in "${!GLUSTER_PID[@]}"; do echo "${GLUSTER_PID[$name]}"; done
}

# ----------------------------------------------------------------------------
# glusterd and the volume
# ----------------------------------------------------------------------------

# gluster_start_glusterd — a fresh working directory, our own volfile, `glusterd -N`; waits
# until the CLI gets an answer through its socket.
gluster_start_glusterd() {
    local vol=$GLUSTER_DIR/glusterd.vol logf=$GLUSTER_LOGS/glusterd.log deadline pid
    if ss -Hltn "sport = :$GLUSTER_PORT" 2>/dev/null | grep -q .; then
        die "gluster: TCP port $GLUSTER_PORT is in use (another glusterd?); glusterd needs it"
    fi
    mkdir -p "$GLUSTER_DIR/state" "$GLUSTER_DIR/run" "$GLUSTER_LOGS"
    cat >"$vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $GLUSTER_DIR/state
    option run-directory $GLUSTER_DIR/run
    option glusterd-sockfile $GLUSTER_DIR/run/glusterd.socket
    option transport-type socket
    option transport.socket.bind-address $GLUSTER_ADDR
    option transport.address-family inet
    option transport.socket.listen-port $GLUSTER_PORT
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option ping-timeout 0
    option event-threads 1
    option max-port 60999
end-volume
EOF
    glusterd -N -f "$vol" -l "$logf" -p "$GLUSTER_DIR/run/glusterd.pid" </dev/null >"$GLUSTER_LOGS/glusterd.out" 2>&1 9>&- 8>&- &
    pid=$!
    gluster_record glusterd "$pid" "$vol"
    deadline=$((SECONDS + GLUSTER_TIMEOUT))
    until gluster_cli volume list >/dev/null 2>&1; do
        if ! is_running "$pid"; then
            show_log_tail "$logf"
            die "gluster: glusterd exited (log: $logf)"
        fi
        ((SECONDS < deadline)) || { show_log_tail "$logf"; die "gluster: glusterd did not answer within ${GLUSTER_TIMEOUT}s (log: $logf)"; }
        sleep 0.2
    done
    log "gluster: glusterd up (pid $pid), listening on $GLUSTER_ADDR:$GLUSTER_PORT"
}

# gluster_volume_procs — "KIND NAME PID ONLINE" per brick (KIND brick, NAME its path) and for
# the self-heal daemon (KIND shd), from `gluster volume status --xml`.
gluster_volume_procs() {
    gluster_cli volume status "$GLUSTER_VOL" --xml 2>/dev/null | python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.stdin).getroot()
for n in root.iter("node"):
    host, path = n.findtext("hostname"), n.findtext("path")
    kind = "shd" if host == "Self-heal Daemon" else "brick"
    print(kind, path, n.findtext("pid"), n.findtext("status"))'
}

# gluster_wait_volume_up NBRICKS — wait until every brick and the self-heal daemon are online;
# records each brick (brickI by its position in GLUSTER_BRICKS) and the shd by pid.
gluster_wait_volume_up() {
    local want=$1 deadline=$((SECONDS + GLUSTER_TIMEOUT)) out kind path pid online i up
    while true; do
        out=$(gluster_volume_procs) || out=""
        up=$(awk '$4 == 1 && $3 > 0' <<<"$out" | wc -l)
        ((up == want + 1)) && break
        ((SECONDS < deadline)) || {
            echo "$out" >&2
            show_log_tail "$GLUSTER_LOGS/glusterd.log"
            die "gluster: $up of $want bricks + the self-heal daemon online after ${GLUSTER_TIMEOUT}s"
        }
        sleep 0.5
    done
    while read -r kind path pid online; do
        [[ $online == 1 && $pid =~ ^[0-9]+$ ]] || continue
        if [[ $kind == shd ]]; then
            # (glusterd starts a new one when the volume's graph changes, e.g. after replace-brick)
            [[ ${GLUSTER_PID[shd]:-} != "$pid" ]] || continue
            gluster_record shd "$pid" "$(gluster_arg_after "$pid" -p)" "$(gluster_arg_after "$pid" -S)"
        else
            for ((i = 1; i <= ${#GLUSTER_BRICKS[@]}; i++)); do
                [[ $path == "${GLUSTER_BRICKS[i - 1]}" ]] || continue
                [[ ${GLUSTER_PID[brick$i]:-} == "$pid" ]] && continue
                [[ $(gluster_arg_after "$pid" --brick-name) == "$path" ]] ||
                    die "gluster: pid $pid is not the brick process of $path"
                gluster_record "brick$i" "$pid" "$path" "$(gluster_arg_after "$pid" -S)"
            done
        fi
    done <<<"$out"
}

# gluster_create — glusterd, then one volume `replica 3` on three fresh bricks (a brick that
# held a deleted volume keeps its volume id and is refused, so they are wiped first; `force`:
# three bricks on one host), started; waits until the bricks and the self-heal daemon are up.
gluster_create() {
    local i spec=()
    rm -rf --one-file-system "$GLUSTER_DIR"
    mkdir -p "$GLUSTER_DIR" "$GLUSTER_LOGS"
    gluster_pick_host
    gluster_start_glusterd
    GLUSTER_BRICKS=()
    for i in 1 2 3; do
        GLUSTER_BRICKS+=("$GLUSTER_DIR/brick$i")
        rm -rf --one-file-system "$GLUSTER_DIR/brick$i"
        mkdir -p "$GLUSTER_DIR/brick$i"
        spec+=("$GLUSTER_HOST:$GLUSTER_DIR/brick$i")
    done
    gluster_cli volume create "$GLUSTER_VOL" replica 3 transport tcp "${spec[@]}" force >>"$GLUSTER_LOGS/cli.out" 2>&1 ||
        { show_log_tail "$GLUSTER_LOGS/cli.out"; die "gluster: volume create failed"; }
    gluster_cli volume start "$GLUSTER_VOL" >>"$GLUSTER_LOGS/cli.out" 2>&1 ||
        { show_log_tail "$GLUSTER_LOGS/cli.out"; die "gluster: volume start failed"; }
    gluster_wait_volume_up 3
    log "gluster: volume $GLUSTER_VOL (replica 3) started: bricks ${GLUSTER_PID[brick1]} ${GLUSTER_PID[brick2]} ${GLUSTER_PID[brick3]}, self-heal daemon ${GLUSTER_PID[shd]}"
}

# ----------------------------------------------------------------------------
# Clients (FUSE mounts)
# ----------------------------------------------------------------------------

# gluster_mount NAME MNT — `glusterfs -N` mounting the volume at MNT, in the background; waits
# for the mount. Each mount of NAME appends to its log.
gluster_mount() {
    local name=$1 mnt=$2 pid logf=$GLUSTER_LOGS/client-$1.log deadline fstype
    mkdir -p "$mnt"
    is_mounted "$mnt" && die "gluster: $mnt is already mounted"
    glusterfs -N --volfile-server="$GLUSTER_HOST" --volfile-id="$GLUSTER_VOL" -l "$logf" "$mnt" \
        </dev/null >>"$GLUSTER_LOGS/client-$name.out" 2>&1 9>&- 8>&- &
    pid=$!
    GLUSTER_MNT[$name]=$mnt
    gluster_record "$name" "$pid" "$mnt"
    deadline=$((SECONDS + GLUSTER_TIMEOUT))
    until fstype=$(mount_fstype "$mnt") && [[ $fstype == fuse.glusterfs ]] && stat "$mnt" >/dev/null 2>&1; do
        if ! is_running "$pid"; then
            show_log_tail "$logf"
            die "gluster: the $name client exited before mounting $mnt (log: $logf)"
        fi
        ((SECONDS < deadline)) || { show_log_tail "$logf"; die "gluster: $mnt not mounted within ${GLUSTER_TIMEOUT}s (log: $logf)"; }
        sleep 0.1
    done
    log "gluster: $name client mounted at $mnt (pid $pid)"
}

# gluster_umount NAME — unmount (the client exits), escalating to its pid and `umount -l`.
gluster_umount() {
    local name=$1 pid=${GLUSTER_PID[$1]:-} mnt=${GLUSTER_MNT[$1]:-}
    [[ -n $mnt ]] && { umount_path "$mnt" || log "warning: could not unmount $mnt"; }
    if [[ -n $pid ]]; then
        if ! wait_gone "$pid" "$GLUSTER_STOP_TIMEOUT"; then
            log "gluster: the $name client (pid $pid) did not exit after the unmount; stopping it"
            stop_pid "$pid" TERM 5 || true
        fi
        wait "$pid" 2>/dev/null || true
        gluster_forget "$name"
    fi
    [[ -z $mnt ]] || ! is_mounted "$mnt" || umount -l "$mnt" 2>/dev/null || true
    unset 'GLUSTER_MNT[$name]'
}

# gluster_remount NAME — a cold client: unmount and mount again.
gluster_remount() {
    local mnt=${GLUSTER_MNT[$1]}
    gluster_umount "$1"
    gluster_mount "$1" "$mnt"
}

# ----------------------------------------------------------------------------
# Repair: a brick dies and is replaced by an empty one, which the self-heal daemon fills.
# ----------------------------------------------------------------------------

# gluster_brick_bytes DIR — bytes of the regular files a brick holds (its .glusterfs holds
# hard links and metadata, not counted).
gluster_brick_bytes() {
    find "$1" -path "$1/.glusterfs" -prune -o -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

# gluster_heal_pending — the entries waiting for a heal, over every brick (`heal VOL statistics
# heal-count`, answered by the self-heal daemon; `heal VOL info` runs glfsheal, which only
# finds glusterd at its default socket).
gluster_heal_pending() {
    gluster_cli volume heal "$GLUSTER_VOL" statistics heal-count 2>/dev/null |
        awk '/^Number of entries:/ { n += $NF; seen = 1 } END { if (!seen) exit 1; print n }'
}

# gluster_replace_brick I — kill -9 brick I's process, then `replace-brick ... commit force`
# with a new empty brick (brick N+1); waits until it is online, then starts a full heal (the
# self-heal daemon would otherwise copy the data only at its next crawl, up to
# cluster.heal-timeout = 600 s later). Sets GLUSTER_NEW_BRICK (its number) and
# GLUSTER_REPLACE_SECS (the replace-brick command's time).
GLUSTER_NEW_BRICK="" GLUSTER_REPLACE_SECS=""
gluster_replace_brick() {
    local i=$1 old new n t0
    old=${GLUSTER_BRICKS[i - 1]}
    n=$((${#GLUSTER_BRICKS[@]} + 1))
    new=$GLUSTER_DIR/brick$n
    rm -rf --one-file-system "$new"
    mkdir -p "$new"
    gluster_stop "brick$i" KILL
    t0=$(now)
    gluster_cli volume replace-brick "$GLUSTER_VOL" "$GLUSTER_HOST:$old" "$GLUSTER_HOST:$new" commit force \
        >>"$GLUSTER_LOGS/cli.out" 2>&1 || { show_log_tail "$GLUSTER_LOGS/cli.out"; die "gluster: replace-brick failed"; }
    GLUSTER_REPLACE_SECS=$(calc "$(now) - $t0")
    GLUSTER_BRICKS+=("$new")
    GLUSTER_NEW_BRICK=$n
    gluster_wait_volume_up 3
    # (refused while the self-heal daemon is not yet connected to the new brick: retried)
    local deadline=$((SECONDS + GLUSTER_TIMEOUT))
    until gluster_cli volume heal "$GLUSTER_VOL" full >>"$GLUSTER_LOGS/cli.out" 2>&1; do
        ((SECONDS < deadline)) || { show_log_tail "$GLUSTER_LOGS/cli.out"; die "gluster: heal full failed for ${GLUSTER_TIMEOUT}s"; }
        sleep 1
    done
}

# gluster_healed NEW SRC — no entry waits for a heal and the new brick holds as many bytes as
# brick SRC.
gluster_healed() {
    local n
    n=$(gluster_heal_pending) || return 1
    [[ $n == 0 ]] || return 1
    [[ $(gluster_brick_bytes "${GLUSTER_BRICKS[$1 - 1]}") == $(gluster_brick_bytes "${GLUSTER_BRICKS[$2 - 1]}") ]]
}

# ----------------------------------------------------------------------------
# Checks and teardown
# ----------------------------------------------------------------------------

# No gluster process (ours or any other) may listen on anything but 127.0.0.1 (TCP or UDP).
gluster_check_loopback_only() {
    command -v ss >/dev/null || die "gluster: ss not found; cannot check that gluster listens on loopback only"
    local line addr bad=0 n=0
    while read -r line; do
        [[ -n $line ]] || continue
        n=$((n + 1))
        addr=$(awk '{print $5}' <<<"$line")
        if [[ $addr != "$GLUSTER_ADDR":* ]]; then
            echo "[gluster] listens beyond loopback: $line" >&2
            bad=1
        fi
    done < <(ss -Hltunp 2>/dev/null | grep -F '(("gluster' || true)
    ((bad == 0)) || die "gluster: a gluster process listens on an address other than $GLUSTER_ADDR"
    log "gluster: all $n gluster listeners are on $GLUSTER_ADDR"
}

# gluster_run_procs DIR — "PID SOCKET" of every running process with a pid file under DIR/run
# on its command line: the brick processes and self-heal daemons glusterd started for the run
# whose GLUSTER_DIR is DIR (SOCKET: the unix socket it was given, `-S`; may be empty).
gluster_run_procs() {
    local dir=$1 f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [[ $pid != "$$" ]] || continue
        tr '\0' '\n' <"$f" 2>/dev/null | awk -v p="$dir/run/" 'index($0, p) == 1 { f = 1 } END { exit !f }' || continue
        is_running "$pid" || continue
        echo "$pid $(gluster_arg_after "$pid" -S)"
    done
}

# gluster_stop_leftovers [DIR] — stop, by pid, any process still running that glusterd started
# for this run (or the run whose GLUSTER_DIR was DIR) but that was not recorded (e.g. a
# self-heal daemon respawned after a graph change), and remove its socket.
gluster_stop_leftovers() {
    local dir=${1:-$GLUSTER_DIR} pid sock
    [[ -n $dir ]] || return 0
    while read -r pid sock; do
        [[ -n $pid ]] || continue
        log "gluster: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)) was left running; stopping it"
        stop_pid "$pid" TERM "$GLUSTER_STOP_TIMEOUT" || true
        [[ $sock == /*.socket && -S $sock ]] && rm -f "$sock"
    done < <(gluster_run_procs "$dir")
    return 0
}

# gluster_stop_all — unmount the clients, stop the volume (glusterd stops the bricks and the
# self-heal daemon), stop glusterd; then stop by pid whatever still runs, remove the sockets
# the processes were given and move the brick logs (glusterd writes them under
# /var/log/glusterfs/bricks/, named after the brick path) into GLUSTER_LOGS.
gluster_stop_all() {
    local name f pid socks=()
    # (the sockets of processes glusterd started that were not recorded: `volume stop` ends
    # them without removing their sockets)
    if [[ -n $GLUSTER_DIR ]]; then
        while read -r pid f; do [[ -z $f ]] || socks+=("$f"); done < <(gluster_run_procs "$GLUSTER_DIR")
    fi
    for name in "${!GLUSTER_MNT[@]}"; do gluster_umount "$name"; done
    if [[ -n ${GLUSTER_PID[glusterd]:-} ]] && is_running "${GLUSTER_PID[glusterd]}" &&
        [[ -n ${GLUSTER_PID[brick1]:-}${GLUSTER_PID[brick2]:-}${GLUSTER_PID[brick3]:-} ]]; then
        gluster_cli volume stop "$GLUSTER_VOL" force >>"$GLUSTER_LOGS/cli.out" 2>&1 ||
            log "gluster: volume stop failed; stopping the bricks by pid"
    fi
    for name in "${GLUSTER_STARTED[@]}"; do
        [[ $name == glusterd ]] || gluster_stop "$name"
    done
    gluster_stop glusterd
    gluster_stop_leftovers
    for f in "${GLUSTER_SOCK[@]}" "${socks[@]}"; do
        [[ $f == /*.socket && -S $f ]] && rm -f "$f"
    done
    GLUSTER_SOCK=()
    for f in "${GLUSTER_BRICKS[@]}"; do
        f=$(gluster_brick_log "$f")
        [[ -f $f ]] && mv "$f" "$GLUSTER_LOGS/" 2>/dev/null
    done
    GLUSTER_STARTED=()
    gluster_remove_hosts_line "$GLUSTER_DIR"
}

# The log glusterd gives the brick process of brick directory $1.
gluster_brick_log() { echo "/var/log/glusterfs/bricks/$(sed 's|^/||; s|/|-|g' <<<"$1").log"; }

# gluster_cleanup_stale DIR — what a run killed outright (its GLUSTER_DIR was DIR) leaves
# outside DIR once its processes are stopped: the sockets its processes were given, its brick
# logs and its /etc/hosts line.
gluster_cleanup_stale() {
    local dir=$1 f
    gluster_stop_leftovers "$dir"
    if [[ -f $dir/sockets ]]; then
        while IFS= read -r f; do
            [[ $f == /*.socket && -S $f ]] && rm -f "$f"
        done <"$dir/sockets"
    fi
    for f in "$dir"/brick*; do
        [[ -d $f ]] && rm -f "$(gluster_brick_log "$f")"
    done
    gluster_remove_hosts_line "$dir"
}
