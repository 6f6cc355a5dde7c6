#!/bin/sh
# queue-scale: does the cost of a message grow with the size of the queue?
# (issue 9: "no growth of per-message cost with queue size up to 100,000
# queued messages"). A benchmark, never a test.
#
#   QUEUED=100000 MESSAGES=2000 tests/bench/queue-scale.sh
#
# It relays MESSAGES fresh messages (smtp-source, 10 sessions, 4 KiB) through
# a release ternd into smtp-sink twice: once with an empty spool, once with
# QUEUED deferred messages already in it (written by the queue-fill example
# straight into the spool layout, one syncfs at the end; their next attempt is
# a day away, so ternd schedules them but never delivers them here). Each
# phase runs the load ROUNDS times (default 3) and keeps its best rate, the
# round least disturbed by whatever else the machine runs. A rate is MESSAGES
# divided by the time from the start of smtp-source to the sink having counted
# them all. ternd's CPU time per message is printed too (less noisy on a busy
# machine than the rates).
#
# Uses target/release/{ternd,examples/smtp-source,examples/smtp-sink,
# examples/queue-fill} (make: cargo build --release --bins --examples);
# CARGO_TARGET_DIR or TARGET_DIR overrides target. As root, ternd runs as
# QS_USER (default nobody). Loopback only. The last line on stdout is:
#
#   RESULT queued=N empty_msgs_per_sec=X loaded_msgs_per_sec=Y ratio=Z
#
# with ratio = loaded / empty (1.0 = no growth). Exit 0 on success, 1 when a
# phase lost or did not deliver messages in time, 2 on a setup error.
set -eu

QUEUED=${QUEUED:-100000}
MESSAGES=${MESSAGES:-2000}
ROUNDS=${ROUNDS:-3}
SESSIONS=10

T=${CARGO_TARGET_DIR:-${TARGET_DIR:-target}}
B=$T/release
for p in "$B/ternd" "$B/examples/smtp-source" "$B/examples/smtp-sink" "$B/examples/queue-fill"; do
    [ -x "$p" ] || { echo "queue-scale: $p missing; run: cargo build --release --bins --examples" >&2; exit 2; }
done

mkdir -p "$T"
D=$(mktemp -d "$(cd "$T" && pwd)/queue-scale.XXXXXX")
# As root, ternd drops to its user (QS_USER, default nobody), which must reach
# the spool; it takes ownership of the spool's contents itself at start-up.
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

# Wait up to $2 seconds for the command $1 to succeed (polling every 20 ms).
wait_for() {
    n=0
    while ! eval "$1"; do
        n=$((n + 1))
        [ "$n" -gt $(($2 * 50)) ] && return 1
        sleep 0.02
    done
}
now() { date +%s.%N; }
sunk() { cat "$D/count" 2>/dev/null || echo 0; }
# utime + stime of ternd so far, in clock ticks (fields 14 and 15; the name in
# field 2 has no spaces).
ticks() { awk '{print $14 + $15}' "/proc/$TERND_PID/stat"; }

"$B/examples/smtp-sink" -q -c 400 --count-file "$D/count" 127.0.0.1:0 >"$D/sink.out" &
SINK_PID=$!
wait_for 'grep -q LISTENING "$D/sink.out"' 10 || { echo "queue-scale: smtp-sink did not start" >&2; exit 2; }
SINK=$(awk '/^LISTENING/ {print $2}' "$D/sink.out")
HZ=$(getconf CLK_TCK)
expected=0

# phase NAME SPOOL: start ternd on SPOOL, relay the load ROUNDS times, stop it.
# Sets BEST (msgs/s) and CPU_US (ternd CPU microseconds per message, best round).
phase() {
    name=$1
    spool=$2
    cat >"$D/$name.conf" <<EOF
hostname = scale.test
listen = 127.0.0.1:0
spool = $spool
local_domains = scale.test
relay_networks = 127.0.0.0/8
route = example.test [127.0.0.1]:${SINK##*:}
dns_servers = 127.0.0.1:9
max_sessions = 100
max_sessions_per_ip = 100
EOF
    [ "$(id -u)" = 0 ] && echo "user = ${QS_USER:-nobody}" >>"$D/$name.conf"
    started=$(now)
    "$B/ternd" -d -f "$D/$name.conf" 2>"$D/$name.log" &
    TERND_PID=$!
    # Up, and done with its first scan of the queue.
    if ! wait_for 'grep -q "queue: [0-9]* messages scheduled" "$D/$name.log" 2>/dev/null' 120; then
        echo "queue-scale: ternd did not start ($name):" >&2
        tail -5 "$D/$name.log" >&2
        exit 2
    fi
    addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$D/$name.log" | head -1)
    echo "$name: ternd up and scanned $(sed -n 's/.*queue: \([0-9]*\) messages scheduled.*/\1/p' "$D/$name.log") queued messages in $(awk -v a="$started" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}') s"
    BEST=0
    CPU_US=0
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        expected=$((expected + MESSAGES))
        c0=$(ticks)
        t0=$(now)
        if ! "$B/examples/smtp-source" -c "$SESSIONS" -m "$MESSAGES" -s 4K -w 120 \
            -t alice@example.test "$addr" >"$D/source.out" 2>&1; then
            echo "queue-scale: smtp-source failed ($name):" >&2
            tail -3 "$D/source.out" >&2
            exit 1
        fi
        if ! wait_for '[ "$(sunk)" -ge "$expected" ]' 120; then
            echo "queue-scale: only $(sunk) of $expected messages reached the sink ($name)" >&2
            exit 1
        fi
        t1=$(now)
        c1=$(ticks)
        rate=$(awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", n / (b - a)}')
        cpu=$(awk -v n="$MESSAGES" -v t="$((c1 - c0))" -v hz="$HZ" 'BEGIN {printf "%.0f", t * 1000000 / hz / n}')
        echo "$name: round $r: $MESSAGES messages relayed at $rate msg/s, ternd CPU $cpu us/msg"
        if awk -v a="$rate" -v b="$BEST" 'BEGIN {exit !(a > b)}'; then
            BEST=$rate
            CPU_US=$cpu
        fi
        r=$((r + 1))
    done
    echo "$name: ternd VmRSS $(awk '/^VmRSS/ {print $2}' "/proc/$TERND_PID/status") kB"
    kill "$TERND_PID"
    wait "$TERND_PID" 2>/dev/null || true
    TERND_PID=
}

phase empty "$D/empty"
EMPTY=$BEST
EMPTY_CPU=$CPU_US

started=$(now)
"$B/examples/queue-fill" "$D/loaded" "$QUEUED" >/dev/null
echo "loaded: $QUEUED deferred messages written in $(awk -v a="$started" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}') s"
phase loaded "$D/loaded"
LOADED=$BEST
LOADED_CPU=$CPU_US

echo "ternd CPU per message: empty $EMPTY_CPU us, loaded $LOADED_CPU us (best rounds)"
awk -v q="$QUEUED" -v e="$EMPTY" -v l="$LOADED" \
    'BEGIN {printf "RESULT queued=%d empty_msgs_per_sec=%.1f loaded_msgs_per_sec=%.1f ratio=%.2f\n", q, e, l, (e > 0 ? l / e : 0)}'
