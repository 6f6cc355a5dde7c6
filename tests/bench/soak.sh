#!/bin/sh
# soak: push many messages through a release ternd into smtp-sink and check
# that all arrive, that ternd's resident memory stays flat after a warm-up,
# and that it leaks no file descriptors or threads. Run by `make soak`.
#
#   tests/bench/soak.sh [-m MESSAGES] [-c SESSIONS] [-w WARMUP] [-s SIZE] [-r ROUNDS]
#
# Defaults: 100000 messages through 50 concurrent sessions, in 4 rounds
# that each end with an empty queue, after a warm-up of 2000. The resident
# set after the last round must be within 10% (+4 MB) of that after the
# first (the first round's queue backlog sets the working size). Loopback only. Prints samples of VmRSS, open fds and threads,
# then a SOAK line; exits 0 when every check passes, 1 otherwise.
set -eu

MESSAGES=100000
SESSIONS=50
WARMUP=2000
SIZE=2K
ROUNDS=4
while getopts m:c:w:s:r: o; do
    case $o in
    m) MESSAGES=$OPTARG ;;
    c) SESSIONS=$OPTARG ;;
    w) WARMUP=$OPTARG ;;
    s) SIZE=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    *) echo "usage: $0 [-m MESSAGES] [-c SESSIONS] [-w WARMUP] [-s SIZE] [-r ROUNDS]" >&2; exit 2 ;;
    esac
done

B=${TARGET_DIR:-target}/release
for p in "$B/ternd" "$B/examples/smtp-source" "$B/examples/smtp-sink"; do
    [ -x "$p" ] || { echo "soak: $p missing; run: cargo build --release --bins --examples" >&2; exit 2; }
done

mkdir -p "${TARGET_DIR:-target}"
D=$(mktemp -d "$(cd "${TARGET_DIR:-target}" && pwd)/soak.XXXXXX")
# As root, ternd drops to its user (SOAK_USER, default nobody), which must reach the spool.
chmod 755 "$D"
SINK_PID=
TERND_PID=
cleanup() {
    [ -n "$TERND_PID" ] && kill "$TERND_PID" 2>/dev/null || true
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT INT TERM

# Wait up to $2 seconds for the command $1 to succeed (polling).
wait_for() {
    n=0
    while ! eval "$1"; do
        n=$((n + 1))
        [ "$n" -gt $(($2 * 10)) ] && return 1
        sleep 0.1
    done
}

"$B/examples/smtp-sink" -q -c 400 --count-file "$D/count" 127.0.0.1:0 >"$D/sink.out" &
SINK_PID=$!
wait_for 'grep -q LISTENING "$D/sink.out"' 10
SINK=$(awk '/^LISTENING/ {print $2}' "$D/sink.out")

cat >"$D/tern.conf" <<EOF
hostname = soak.test
listen = 127.0.0.1:0
spool = $D/spool
local_domains = soak.test
relay_networks = 127.0.0.0/8
route = example.test [127.0.0.1]:${SINK##*:}
dns_servers = 127.0.0.1:9
max_sessions = 100
max_sessions_per_ip = 100
EOF
[ "$(id -u)" = 0 ] && echo "user = ${SOAK_USER:-nobody}" >>"$D/tern.conf"
"$B/ternd" -d -f "$D/tern.conf" 2>"$D/ternd.log" &
TERND_PID=$!
wait_for 'grep -q "listening on" "$D/ternd.log" 2>/dev/null' 10
ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$D/ternd.log" | head -1)

sunk() { cat "$D/count" 2>/dev/null || echo 0; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$TERND_PID/status"; }
fds() { ls "/proc/$TERND_PID/fd" | wc -l; }
threads() { ls "/proc/$TERND_PID/task" | wc -l; }
queued() { ls "$D/spool/env" 2>/dev/null | wc -l; }
# The queue is empty and every cached connection to the sink has been closed.
settle() {
    WANT=$1
    wait_for '[ "$(sunk)" -ge "$WANT" ] && [ "$(queued)" -eq 0 ]' 600 || return 1
    sleep 3
}

echo "soak: ternd pid $TERND_PID on $ADDR, sink on $SINK, $MESSAGES messages of $SIZE over $SESSIONS sessions"
echo "idle:     rss_kb=$(rss) fds=$(fds) threads=$(threads)"

"$B/examples/smtp-source" -c "$SESSIONS" -m "$WARMUP" -s "$SIZE" -r 10 -w 600 -t a@example.test "$ADDR" >"$D/warm.out"
settle "$WARMUP" || { echo "soak: warm-up mail did not all arrive ($(sunk) of $WARMUP)"; exit 1; }
RSS0=$(rss) FD0=$(fds) TH0=$(threads)
echo "warm:     rss_kb=$RSS0 fds=$FD0 threads=$TH0"

# The run in ROUNDS rounds, each followed by an empty queue: the first brings
# the resident set to its working size (the queue backlog a round builds up
# costs memory); later rounds must not raise it further.
START=$(date +%s)
PER=$((MESSAGES / ROUNDS))
SENT=$WARMUP
MAX=0
fail=0
RSS_FIRST=
echo "  round   secs   sunk  queued  rss_kb  fds  threads"
for round in $(seq 1 "$ROUNDS"); do
    "$B/examples/smtp-source" -c "$SESSIONS" -m "$PER" -s "$SIZE" -r 10 -w 3600 -t a@example.test "$ADDR" >"$D/source.out" &
    SOURCE_PID=$!
    SENT=$((SENT + PER))
    while :; do
        R=$(rss)
        [ "$R" -gt "$MAX" ] && MAX=$R
        printf '%7d %6d %6d %7d %7d %4d %8d\n' "$round" $(($(date +%s) - START)) "$(sunk)" "$(queued)" "$R" "$(fds)" "$(threads)"
        if ! kill -0 "$SOURCE_PID" 2>/dev/null && [ "$(sunk)" -ge "$SENT" ]; then break; fi
        if [ $(($(date +%s) - START)) -gt 3600 ]; then echo "soak: over an hour, giving up"; break; fi
        sleep 5
    done
    wait "$SOURCE_PID" || true
    grep -q 'errors=0 ' "$D/source.out" || { echo "FAIL: smtp-source saw errors in round $round"; tail -1 "$D/source.out"; fail=1; }
    settle "$SENT" || true
    R=$(rss) F=$(fds) T=$(threads)
    echo "round $round done: rss_kb=$R fds=$F threads=$T sunk=$(sunk)"
    [ -n "$RSS_FIRST" ] || RSS_FIRST=$R
    [ "$F" -le "$FD0" ] || { echo "FAIL: fds $FD0 -> $F"; fail=1; }
    [ "$T" -le "$TH0" ] || { echo "FAIL: threads $TH0 -> $T"; fail=1; }
done
SECS=$(($(date +%s) - START))
RSS1=$(rss) FD1=$(fds) TH1=$(threads) GOT=$(sunk)
TOTAL=$((WARMUP + PER * ROUNDS))
echo "after:    rss_kb=$RSS1 fds=$FD1 threads=$TH1 (after round 1: $RSS_FIRST; max during the run $MAX)"

[ "$GOT" -eq "$TOTAL" ] || { echo "FAIL: sink got $GOT of $TOTAL"; fail=1; }
# Flat: after the last round within 10% (and 4 MB) of after the first.
LIMIT=$((RSS_FIRST + RSS_FIRST / 10 + 4096))
[ "$RSS1" -le "$LIMIT" ] || { echo "FAIL: rss_kb $RSS_FIRST after round 1 -> $RSS1 (limit $LIMIT)"; fail=1; }
echo "SOAK messages=$((PER * ROUNDS)) sessions=$SESSIONS seconds=$SECS delivered=$((GOT - WARMUP)) rss_kb_warm=$RSS0 rss_kb_round1=$RSS_FIRST rss_kb_max=$MAX rss_kb_after=$RSS1 fds=$FD0->$FD1 threads=$TH0->$TH1 result=$([ $fail = 0 ] && echo ok || echo FAIL)"
exit $fail
