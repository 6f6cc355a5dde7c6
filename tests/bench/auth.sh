#!/usr/bin/env bash
# auth.sh: what mail authentication (issue 20) costs ternd in acceptance
# rate; one of bench.sh's further scripts (BENCH_SCRIPTS in the Makefile,
# tests/bench/README.md "Further scripts"): it builds nothing, takes the
# binaries from $BENCH_BIN, puts its files under $BENCH_DIR, prints its table
# on stdout and, last, a `BENCH auth_...` line.
#
# Three ternds accept smtp-source's load into their spools (queue_only):
#   off    the client is outside (not in relay_networks), auth_check = no
#   check  the same with auth_check = yes: SPF of HELO and MAIL FROM, DKIM
#          (none here), DMARC, and an Authentication-Results field, against
#          a private nsd on loopback (answers cached for their TTL, as in
#          steady state on a real host)
#   sign   the client is inside (relay_networks) and every message is
#          DKIM-signed with a 2048-bit RSA key (dkim_sign)
# in BENCH_ROUNDS interleaved rounds (the order rotates each round),
# so that drift on a shared machine hits every load alike. Printed: each
# round's rates, and the median and spread (min-max) of the per-round ratios
# check/off and sign/off. A benchmark: no target, no assertion; the exit
# status is 1 only when a load broke, 2 when a tool is missing.
#
# Knobs: BENCH_ROUNDS (5), BENCH_AUTH_MESSAGES (2000), BENCH_AUTH_SESSIONS
# (10), BENCH_SIZE (4K), BENCH_TERN_USER (nobody, when run as root),
# BENCH_KEEP=1 keeps the files.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
PARENT=${BENCH_DIR:-$TARGET}
ROUNDS=${BENCH_AUTH_ROUNDS:-${BENCH_ROUNDS:-5}}
# At least 3 rounds: one round is not a claim (make bench's BENCH_ROUNDS is 1
# without Postfix).
[ "$ROUNDS" -ge 3 ] 2>/dev/null || ROUNDS=3
MESSAGES=${BENCH_AUTH_MESSAGES:-2000}
SESSIONS=${BENCH_AUTH_SESSIONS:-10}
SIZE=${BENCH_SIZE:-4K}
TERN_USER=${BENCH_TERN_USER:-nobody}
KEEP=${BENCH_KEEP:-0}

log() { echo "auth-bench: $*" >&2; }
for p in "$B/ternd" "$X/smtp-source"; do
    [ -x "$p" ] || { log "$p missing; run: cargo build --release --bins --examples"; exit 2; }
done
NSD=$(command -v nsd || echo /usr/sbin/nsd)
for t in "$NSD" openssl; do
    command -v "$t" >/dev/null 2>&1 || { log "$t missing (apt-get install nsd openssl)"; exit 2; }
done

mkdir -p "$PARENT" || exit 2
D=$(mktemp -d "$(cd "$PARENT" && pwd)/auth.XXXXXX") || exit 2
chmod 755 "$D"
PIDS=()
BROKEN=0
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$KEEP" = 1 ]; then log "files kept in $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---- a private nsd serving the sender's records ---------------------------------
# One root zone holds them all, so that every other name is a cached NXDOMAIN.
PORT=
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 10000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    PORT=$p
    break
done
[ -n "$PORT" ] || { log "no free port for nsd"; exit 1; }
cat >"$D/root.zone" <<'EOF'
$TTL 3600
. IN SOA ns. hostmaster. 1 3600 600 86400 3600
. IN NS ns.
ns. IN A 127.0.0.1
sender.bench. IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.sender.bench. IN TXT "v=DMARC1; p=reject"
EOF
cat >"$D/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1
  port: $PORT
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$D"
  database: ""
  pidfile: "$D/nsd.pid"
  xfrdfile: "$D/xfrd.state"
  zonelistfile: "$D/zone.list"
  xfrdir: "$D"
  logfile: "$D/nsd.log"
  server-count: 1
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "$D/root.zone"
EOF
"$NSD" -d -c "$D/nsd.conf" >"$D/nsd.out" 2>&1 </dev/null &
PIDS+=($!)
if ! wait_for "grep -qs 'nsd started' '$D/nsd.log' '$D/nsd.out'" 10; then
    log "nsd did not start: $(tail -3 "$D/nsd.log" "$D/nsd.out" 2>/dev/null)"
    exit 1
fi

# ---- the ternds -------------------------------------------------------------------
openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:2048 -out "$D/rsa.pem" 2>/dev/null ||
    { log "openssl genpkey failed"; exit 1; }
[ "$(id -u)" = 0 ] && chown "$TERN_USER" "$D/rsa.pem"
echo bench >"$D/users"

declare -A ADDR
# start NAME KEY=VALUE...
start() {
    local name=$1 dir=$D/$1
    shift
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "$TERN_USER" "$dir"
    if ! ternd_start "$dir" hostname=mx.bench local_domains=example.test "local_users=$D/users" \
        queue_only=yes "${TERN_LIMITS[@]}" "dns_servers=127.0.0.1:$PORT" "$@"; then
        log "ternd $name did not start: $(tail -3 "$dir/ternd.log")"
        exit 1
    fi
    ADDR[$name]=$TERND_ADDR
}
start off relay_networks=192.0.2.0/24 auth_check=no
start check relay_networks=192.0.2.0/24 auth_check=yes
start sign relay_networks=127.0.0.0/8 "dkim_sign=sender.bench b2026 $D/rsa.pem rsa"


# One warm-up message each (fills the checker's DNS cache, as a running
# host's would be).
for n in off check sign; do
    "$X/smtp-source" -c 1 -m 1 -f bench@sender.bench -t bench@example.test "${ADDR[$n]}" >/dev/null 2>&1
done

ORDERS=("off check sign" "check sign off" "sign off check")
CHECK_RATIOS=()
SIGN_RATIOS=()
log "$ROUNDS rounds of $MESSAGES messages, $SESSIONS sessions, $SIZE bodies, PIPELINING"
printf '%-6s %12s %12s %12s %10s %10s\n' round off/s check/s sign/s check/off sign/off
for r in $(seq "$ROUNDS"); do
    declare -A RATE=()
    for n in ${ORDERS[$(((r - 1) % 3))]}; do
        RATE[$n]=$(load_rate auth-bench "$D/$n.$r.src" "$MESSAGES" "${ADDR[$n]}" -s "$SIZE" -w 300 \
            -f bench@sender.bench -t bench@example.test)
        [ "${RATE[$n]}" = 0 ] && BROKEN=1
    done
    c=$(awk -v a="${RATE[check]}" -v b="${RATE[off]}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }')
    s=$(awk -v a="${RATE[sign]}" -v b="${RATE[off]}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }')
    CHECK_RATIOS+=("$c")
    SIGN_RATIOS+=("$s")
    printf '%-6s %12s %12s %12s %10s %10s\n' "$r" "${RATE[off]}" "${RATE[check]}" "${RATE[sign]}" "$c" "$s"
done

# summary NAME RATIO...: median and min-max.
# stats RATIO...: "median min-max".
stats() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.3f %.3f-%.3f\n", m, v[1], v[NR]
        }'
}
read -r CM CS <<<"$(stats "${CHECK_RATIOS[@]}")"
read -r SM SS <<<"$(stats "${SIGN_RATIOS[@]}")"
echo
printf '%-42s median %s  spread %s  (%d rounds)\n' "acceptance rate, checks on / off:" "$CM" "$CS" "$ROUNDS"
printf '%-42s median %s  spread %s  (%d rounds)\n' "acceptance rate, RSA-2048 signing / off:" "$SM" "$SS" "$ROUNDS"
# What the checks wrote, once, for the record (progress: stderr).
id=$(ls "$D/check/spool/msg" 2>/dev/null | head -1)
[ -n "$id" ] && grep -m1 -A4 '^Authentication-Results:' "$D/check/spool/msg/$id" | sed 's/^/  /' >&2
# The last line (tests/bench/README.md, "Further scripts").
echo "BENCH auth_check_x_off=$CM auth_check_x_off_spread=$CS auth_sign_x_off=$SM auth_sign_x_off_spread=$SS auth_broken=$BROKEN"
exit $BROKEN
