# bench/lib-tahoe.sh — a Tahoe-LAFS 1.20 grid on loopback, for the benchmarks.
# Sourced by bench/tahoe (standalone figures) and bench/run (the combined suite).
#
# The caller sets, before calling any function:
#   TAHOE_VENV     the virtualenv holding tahoe-lafs (created by tahoe_ensure)
#   TAHOE_GRID     a directory for the grid's nodes (wiped by tahoe_create_grid)
#   TAHOE_LOGS     where the nodes' logs go (kept by the caller)
#   TAHOE_TIMEOUT  seconds to wait for a node or the grid (default 60)
# and sources bench/lib.sh first (log, die, show_log_tail, is_running, stop_pid, now, calc).
# Optional hooks, called when defined: tahoe_hook_started NAME PID DIR and
# tahoe_hook_stopped NAME (bench/run records pids for its stale-run cleanup).
#
# Every node listens on 127.0.0.1 only: the introducer and storage nodes with
# `tcp:PORT:interface=127.0.0.1` and that address as `tub.location`; clients
# have no listener at all (`tub.port = disabled`) and their web API on
# 127.0.0.1. Tor and I2P are off. The venv is patched so that each node's log
# tub binds 127.0.0.1 too. tahoe_check_loopback_only verifies all of it with ss.
# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are read by the scripts that source this file

TAHOE_VERSION=1.20.0
TAHOE_HOST=127.0.0.1 # never change this: only loopback traffic is allowed
TAHOE_TIMEOUT=${TAHOE_TIMEOUT:-60}
TAHOE_STOP_TIMEOUT=15
TAHOE_SMALL_SIZE=4096

declare -A TAHOE_NODE_PID=() # node name -> pid of its `tahoe run`
declare -A TAHOE_WEB_PORT=() # client name -> web API port
TAHOE_NODES_STARTED=()       # names, in start order (a name may repeat)
TAHOE_FURL=""                # the introducer's FURL
TAHOE_SECS=""                # elapsed seconds of the last timed operation

# `-H Expect:` stops curl from waiting for a `100 Continue` before large bodies.
TAHOE_CURL=(curl -sS --fail --show-error -H 'Expect:')

tahoe_bin() { echo "$TAHOE_VENV/bin/tahoe"; }
tahoe_web() { echo "http://$TAHOE_HOST:${TAHOE_WEB_PORT[$1]}"; }

# A free TCP port on 127.0.0.1 (bound and released; the node binds it shortly after).
tahoe_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ----------------------------------------------------------------------------
# Install (cached): a virtualenv with tahoe-lafs from PyPI.
# ----------------------------------------------------------------------------
tahoe_ensure() {
    local tahoe work
    tahoe=$(tahoe_bin)
    work=$(dirname -- "$TAHOE_VENV")
    if [[ -x $tahoe ]] && "$tahoe" --version >/dev/null 2>&1; then
        log "reusing $TAHOE_VENV ($("$tahoe" --version 2>/dev/null | head -n1))"
    else
        rm -rf "$TAHOE_VENV"
        if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            log "python3 has no venv/ensurepip; installing python3-venv with apt-get"
            ((EUID == 0)) || die "python3-venv is missing and installing it needs root (apt-get install python3-venv)"
            { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; } \
                >"$work/tahoe-apt.log" 2>&1 || { show_log_tail "$work/tahoe-apt.log"; die "apt-get install python3-venv failed (log: $work/tahoe-apt.log)"; }
        fi
        log "creating $TAHOE_VENV and installing tahoe-lafs==$TAHOE_VERSION (a minute or two)"
        {
            python3 -m venv "$TAHOE_VENV" &&
                "$TAHOE_VENV/bin/pip" install --disable-pip-version-check -q "tahoe-lafs==$TAHOE_VERSION"
        } >"$work/tahoe-pip.log" 2>&1 || {
            show_log_tail "$work/tahoe-pip.log"
            rm -rf "$TAHOE_VENV"
            die "installing tahoe-lafs failed (log: $work/tahoe-pip.log)"
        }
        "$tahoe" --version >/dev/null 2>&1 || die "$tahoe does not run after install"
    fi
    tahoe_patch_loopback
}

# Every Tahoe node also starts a "log tub" (for `flogtool`) on a port bound to
# all interfaces (iputil.allocate_tcp_port binds ('', 0)), with no option to
# turn it off. Patch the venv's copy to bind 127.0.0.1 instead (idempotent).
tahoe_patch_loopback() {
    local f
    f=$("$TAHOE_VENV/bin/python" -c 'import allmydata.util.iputil as m; print(m.__file__)') ||
        die "cannot locate allmydata/util/iputil.py in $TAHOE_VENV"
    if grep -qF "s.bind(('', 0))" "$f"; then
        sed -i "s/s.bind(('', 0))/s.bind(('127.0.0.1', 0))/" "$f"
        log "patched $f: log tub binds 127.0.0.1 only"
    fi
    grep -qF "s.bind(('127.0.0.1', 0))" "$f" || die "could not patch $f to bind 127.0.0.1 (unexpected Tahoe version?)"
}

# ----------------------------------------------------------------------------
# Nodes
# ----------------------------------------------------------------------------

# tahoe_set_cfg FILE SECTION KEY VALUE [SECTION KEY VALUE ...] — set keys in tahoe.cfg.
tahoe_set_cfg() {
    python3 - "$@" <<'EOF'
import configparser, sys
path, rest = sys.argv[1], sys.argv[2:]
cp = configparser.ConfigParser(interpolation=None)
cp.optionxform = str
cp.read(path, encoding="utf-8")
for section, key, value in zip(rest[0::3], rest[1::3], rest[2::3]):
    if not cp.has_section(section):
        cp.add_section(section)
    cp.set(section, key, value)
with open(path, "w", encoding="utf-8") as f:
    cp.write(f)
EOF
}

# Settings for every node: no Tor, no I2P, plain TCP only, no log gatherer.
TAHOE_NO_ANON=(connections tcp tcp tor enabled false i2p enabled false node log_gatherer.furl "")

# tahoe_start_node NAME — `tahoe run` the node in $TAHOE_GRID/NAME, in the background.
# Each start appends to the node's log.
tahoe_start_node() {
    local name=$1 dir=$TAHOE_GRID/$1
    "$(tahoe_bin)" run --allow-stdin-close "$dir" </dev/null >>"$TAHOE_LOGS/$name.log" 2>&1 9>&- 8>&- &
    TAHOE_NODE_PID[$name]=$!
    TAHOE_NODES_STARTED+=("$name")
    if declare -F tahoe_hook_started >/dev/null; then tahoe_hook_started "$name" "$!" "$dir"; fi
    log "tahoe: started $name (pid ${TAHOE_NODE_PID[$name]})"
}

# tahoe_stop_node NAME [KILL] — SIGTERM (SIGKILL after 15 s); with KILL, SIGKILL at once.
tahoe_stop_node() {
    local name=$1 sig=${2:-TERM} pid=${TAHOE_NODE_PID[$1]:-}
    [[ -n $pid ]] || return 0
    if ! stop_pid "$pid" "$sig" "$TAHOE_STOP_TIMEOUT"; then
        log "tahoe: $name (pid $pid) did not stop within ${TAHOE_STOP_TIMEOUT}s of SIG$sig; killed it with SIGKILL"
    fi
    unset 'TAHOE_NODE_PID[$name]'
    if declare -F tahoe_hook_stopped >/dev/null; then tahoe_hook_stopped "$name"; fi
}

# Stop every node that is up, in reverse start order (used on exit).
tahoe_stop_all() {
    local i
    for ((i = ${#TAHOE_NODES_STARTED[@]} - 1; i >= 0; i--)); do
        tahoe_stop_node "${TAHOE_NODES_STARTED[$i]}"
    done
}

# tahoe_wait_for LABEL NAME CMD... — poll CMD until it succeeds; NAME's node must keep running.
tahoe_wait_for() {
    local label=$1 name=$2
    shift 2
    local deadline=$((SECONDS + TAHOE_TIMEOUT))
    until "$@"; do
        if ! is_running "${TAHOE_NODE_PID[$name]}"; then
            show_log_tail "$TAHOE_LOGS/$name.log"
            die "tahoe: $name exited while waiting for $label (log: $TAHOE_LOGS/$name.log)"
        fi
        ((SECONDS < deadline)) || {
            show_log_tail "$TAHOE_LOGS/$name.log"
            die "tahoe: timed out after ${TAHOE_TIMEOUT}s waiting for $label (log: $TAHOE_LOGS/$name.log)"
        }
        sleep 0.2
    done
}

# tahoe_connected_servers CLIENT — number of storage servers the client is connected to.
tahoe_connected_servers() {
    curl -sS --fail --max-time 5 "$(tahoe_web "$1")/?t=json" 2>/dev/null |
        python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(1 for s in d.get("servers", []) if (s.get("connection_status") or "").lower().startswith("connected")))' 2>/dev/null
}

# tahoe_has_servers CLIENT N — true when CLIENT is connected to exactly N storage servers.
tahoe_has_servers() {
    local n
    n=$(tahoe_connected_servers "$1") || return 1
    [[ $n == "$2" ]]
}

# tahoe_wait_servers CLIENT N — wait until CLIENT is connected to N storage servers.
tahoe_wait_servers() {
    tahoe_wait_for "$1 to be connected to $2 storage servers" "$1" tahoe_has_servers "$1" "$2"
}

tahoe_file_exists() { [[ -s $1 ]]; }

# tahoe_add_storage NAME — create and start a storage node (127.0.0.1 only, no web port).
tahoe_add_storage() {
    local name=$1 port
    port=$(tahoe_free_port)
    "$(tahoe_bin)" create-node --nickname="$name" --introducer="$TAHOE_FURL" \
        --port="tcp:$port:interface=$TAHOE_HOST" --location="tcp:$TAHOE_HOST:$port" \
        --webport=none "$TAHOE_GRID/$name" >"$TAHOE_LOGS/create-$name.log" 2>&1 ||
        { show_log_tail "$TAHOE_LOGS/create-$name.log"; die "tahoe create-node $name failed"; }
    tahoe_set_cfg "$TAHOE_GRID/$name/tahoe.cfg" storage reserved_space 0 "${TAHOE_NO_ANON[@]}"
    tahoe_start_node "$name"
}

# tahoe_create_grid STORAGE_NODES — a fresh grid in $TAHOE_GRID: an introducer,
# STORAGE_NODES storage nodes and two clients, `writer` and `reader`, with 1-of-3
# encoding (shares.needed=1, happy=3, total=3). Waits until both clients are
# connected to every storage node, then checks that every listener is on 127.0.0.1.
tahoe_create_grid() {
    local nstorage=$1 intro_port port i name
    rm -rf "$TAHOE_GRID"
    mkdir -p "$TAHOE_GRID" "$TAHOE_LOGS"

    # Introducer: listens on 127.0.0.1 only, no web port.
    intro_port=$(tahoe_free_port)
    "$(tahoe_bin)" create-introducer --port="tcp:$intro_port:interface=$TAHOE_HOST" \
        --location="tcp:$TAHOE_HOST:$intro_port" "$TAHOE_GRID/introducer" >"$TAHOE_LOGS/create-introducer.log" 2>&1 ||
        { show_log_tail "$TAHOE_LOGS/create-introducer.log"; die "tahoe create-introducer failed"; }
    tahoe_set_cfg "$TAHOE_GRID/introducer/tahoe.cfg" node nickname introducer node web.port "" "${TAHOE_NO_ANON[@]}"
    tahoe_start_node introducer
    tahoe_wait_for "the introducer's FURL" introducer tahoe_file_exists "$TAHOE_GRID/introducer/private/introducer.furl"
    TAHOE_FURL=$(<"$TAHOE_GRID/introducer/private/introducer.furl")
    [[ $TAHOE_FURL == pb://*@tcp:$TAHOE_HOST:$intro_port/* ]] || die "unexpected introducer FURL: $TAHOE_FURL"
    log "tahoe: introducer at tcp:$TAHOE_HOST:$intro_port"

    for ((i = 1; i <= nstorage; i++)); do
        tahoe_add_storage "storage$i"
    done

    # Client nodes: no listener at all, web API on 127.0.0.1, 1-of-3 encoding.
    for name in writer reader; do
        port=$(tahoe_free_port)
        TAHOE_WEB_PORT[$name]=$port
        "$(tahoe_bin)" create-client --nickname="$name" --introducer="$TAHOE_FURL" \
            --webport="tcp:$port:interface=$TAHOE_HOST" \
            --shares-needed=1 --shares-happy=3 --shares-total=3 \
            "$TAHOE_GRID/$name" >"$TAHOE_LOGS/create-$name.log" 2>&1 ||
            { show_log_tail "$TAHOE_LOGS/create-$name.log"; die "tahoe create-client $name failed"; }
        tahoe_set_cfg "$TAHOE_GRID/$name/tahoe.cfg" node tub.port disabled node tub.location disabled "${TAHOE_NO_ANON[@]}"
        tahoe_start_node "$name"
    done

    for name in writer reader; do
        tahoe_wait_servers "$name" "$nstorage"
        log "tahoe: $name connected to $nstorage storage servers (web API on $TAHOE_HOST:${TAHOE_WEB_PORT[$name]})"
    done
    tahoe_check_loopback_only
}

# tahoe_restart_client NAME — stop a client and start it again (a cold client:
# nothing cached in its process); waits until it is connected to N servers.
tahoe_restart_client() {
    local name=$1 nservers=$2
    tahoe_stop_node "$name"
    tahoe_start_node "$name"
    tahoe_wait_servers "$name" "$nservers"
    log "tahoe: $name restarted and connected to $nservers storage servers"
}

# Every TCP socket our nodes listen on must be bound to 127.0.0.1.
tahoe_check_loopback_only() {
    command -v ss >/dev/null || { log "tahoe: ss not found; skipping the listener check"; return 0; }
    local name pid line addr bad=0
    for name in "${!TAHOE_NODE_PID[@]}"; do
        pid=${TAHOE_NODE_PID[$name]}
        while read -r line; do
            [[ -n $line ]] || continue
            addr=$(awk '{print $4}' <<<"$line")
            if [[ $addr != 127.0.0.1:* ]]; then
                echo "[tahoe] $name listens on $addr: $line" >&2
                bad=1
            fi
        done < <(ss -Hltnp 2>/dev/null | grep -F "pid=$pid," || true)
    done
    ((bad == 0)) || die "tahoe: a node listens on an address other than 127.0.0.1"
    log "tahoe: all listeners are on 127.0.0.1"
}

# ----------------------------------------------------------------------------
# Operations, each through a client's web API. Each timed one sets TAHOE_SECS.
# ----------------------------------------------------------------------------

# tahoe_put CLIENT FILE — PUT /uri (an immutable upload, unlinked), timed until
# the filecap comes back (every share placed). Sets TAHOE_CAP.
TAHOE_CAP=""
tahoe_put() {
    local t0 t1
    t0=$(now)
    TAHOE_CAP=$("${TAHOE_CURL[@]}" -T "$2" "$(tahoe_web "$1")/uri")
    t1=$(now)
    TAHOE_SECS=$(calc "$t1 - $t0")
    [[ $TAHOE_CAP == URI:CHK:* ]] || die "tahoe: upload of $2 returned '$TAHOE_CAP', expected a URI:CHK: cap"
}

# tahoe_get_verified CLIENT CAP SHA256 — GET /uri/CAP piped into sha256sum,
# timed; the data must match SHA256. (sha256sum keeps up: Tahoe delivers well
# below what sha256sum digests on one core.)
tahoe_get_verified() {
    local t0 t1 sum
    t0=$(now)
    sum=$("${TAHOE_CURL[@]}" "$(tahoe_web "$1")/uri/$2" | sha256sum | awk '{print $1}')
    t1=$(now)
    TAHOE_SECS=$(calc "$t1 - $t0")
    [[ $sum == "$3" ]] || die "tahoe: DATA MISMATCH: $1 read back sha256 $sum, expected $3"
}

# tahoe_mkdir CLIENT — POST /uri?t=mkdir; sets TAHOE_DIRCAP.
TAHOE_DIRCAP=""
tahoe_mkdir() {
    TAHOE_DIRCAP=$("${TAHOE_CURL[@]}" -X POST "$(tahoe_web "$1")/uri?t=mkdir")
    [[ $TAHOE_DIRCAP == URI:DIR2:* ]] || die "tahoe: mkdir returned '$TAHOE_DIRCAP', expected a URI:DIR2: cap"
}

# tahoe_put_files CLIENT DIRCAP SRCDIR CFG — PUT /uri/DIRCAP/NAME (upload and
# link) for every file of SRCDIR, in one curl process (one keep-alive
# connection; CFG is its -K config), timed.
tahoe_put_files() {
    local client=$1 dircap=$2 src=$3 cfg=$4 f t0 t1
    : >"$cfg"
    for f in "$src"/*; do
        printf 'url = "%s/uri/%s/%s"\nupload-file = "%s"\noutput = "/dev/null"\n' \
            "$(tahoe_web "$client")" "$dircap" "${f##*/}" "$f" >>"$cfg"
    done
    t0=$(now)
    "${TAHOE_CURL[@]}" --fail-early -K "$cfg"
    t1=$(now)
    TAHOE_SECS=$(calc "$t1 - $t0")
}

# tahoe_list CLIENT DIRCAP OUT — GET /uri/DIRCAP?t=json into OUT, timed; sets
# TAHOE_COUNT to the number of children.
TAHOE_COUNT=""
tahoe_list() {
    local t0 t1
    t0=$(now)
    "${TAHOE_CURL[@]}" -o "$3" "$(tahoe_web "$1")/uri/$2?t=json"
    t1=$(now)
    TAHOE_SECS=$(calc "$t1 - $t0")
    TAHOE_COUNT=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))[1]["children"]))' "$3")
}

# tahoe_get_files CLIENT DIRCAP OUTDIR CFG — list DIRCAP, then GET every child
# by its cap into OUTDIR (one curl process), all timed together.
tahoe_get_files() {
    local client=$1 dircap=$2 out=$3 cfg=$4 t0 t1 listing=$4.json
    t0=$(now)
    "${TAHOE_CURL[@]}" -o "$listing" "$(tahoe_web "$client")/uri/$dircap?t=json"
    python3 - "$listing" "$(tahoe_web "$client")" "$out" >"$cfg" <<'EOF'
import json, sys
listing, base, outdir = sys.argv[1:4]
for name, (kind, info) in sorted(json.load(open(listing))[1]["children"].items()):
    assert kind == "filenode", (name, kind)
    print(f'url = "{base}/uri/{info["ro_uri"]}"\noutput = "{outdir}/{name}"')
EOF
    "${TAHOE_CURL[@]}" --fail-early -K "$cfg"
    t1=$(now)
    TAHOE_SECS=$(calc "$t1 - $t0")
}

# tahoe_mkdir_entries CLIENT N — one directory with N children e000000.. made
# in one request (POST /uri?t=mkdir-with-children; every child is the empty
# literal file URI:LIT:, which needs no upload), timed. Sets TAHOE_DIRCAP.
tahoe_mkdir_entries() {
    local client=$1 n=$2 body t0 t1
    body=$(mktemp)
    python3 -c '
import json, sys
n = int(sys.argv[1])
json.dump({"e%06d" % i: ["filenode", {"ro_uri": "URI:LIT:"}] for i in range(n)}, sys.stdout)' "$n" >"$body"
    t0=$(now)
    TAHOE_DIRCAP=$("${TAHOE_CURL[@]}" -X POST --data-binary "@$body" "$(tahoe_web "$client")/uri?t=mkdir-with-children")
    t1=$(now)
    rm -f "$body"
    TAHOE_SECS=$(calc "$t1 - $t0")
    [[ $TAHOE_DIRCAP == URI:DIR2:* ]] || die "tahoe: mkdir-with-children returned '$TAHOE_DIRCAP', expected a URI:DIR2: cap"
}

# tahoe_check CLIENT CAP [repair] OUT — POST /uri/CAP?t=check (&repair=true),
# JSON results into OUT, timed.
tahoe_check() {
    local client=$1 cap=$2 repair=$3 out=$4 q="t=check&output=JSON" t0 t1
    [[ $repair == repair ]] && q+="&repair=true"
    t0=$(now)
    "${TAHOE_CURL[@]}" -X POST -o "$out" "$(tahoe_web "$client")/uri/$cap?$q"
    t1=$(now)
    TAHOE_SECS=$(calc "$t1 - $t0")
}

# tahoe_share_bytes NAME... — bytes of share files held by these storage nodes.
tahoe_share_bytes() {
    local name dirs=()
    for name in "$@"; do dirs+=("$TAHOE_GRID/$name/storage/shares"); done
    find "${dirs[@]}" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
