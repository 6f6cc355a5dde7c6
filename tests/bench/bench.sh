#!/usr/bin/env bash
# bench.sh: the benchmark of issue 9, run by `make bench` (which builds the
# release binaries and examples first; this script builds nothing). In one go:
#
#   1. protocol ceiling: smtp-source -> smtp-sink, 1/10/50 sessions
#   2. durability ceiling: fsync-ceiling, 1 and 16 threads, on the spool's filesystem;
#      durable ceiling: smtp-source -> smtp-sink --durable (a file per message,
#      group-synced before its 250), 1/10/50 sessions; relay ceiling: that load
#      and a protocol-ceiling load at once, 10 and 50 sessions
#   3. ternd accepting into its spool (queue_only = yes), 1/10/50 sessions,
#      and what 50 busy and BENCH_IDLE idle sessions cost in memory
#   4. end to end: smtp-source -> ternd -> smtp-sink through a `route`,
#      timed until the sink has counted every message, 10 and 50 sessions
#   5. local delivery: smtp-source -> ternd -> Maildir new/
#   6. ternd's peak RSS and CPU seconds per 1,000 messages for each load
#   + the same loads against a private Postfix (BENCH_POSTFIX=1, tests/bench/postfix.sh)
#   + queue-scale.sh, when present (BENCH_QUEUE=0 skips it)
#
# then a table of each figure, its ratio to the ceiling measured in this run,
# the tern/Postfix ratio, and the targets of issue 9, "met" or "NOT met".
# A missed target never fails the run: it is a benchmark. The exit status is
# 1 only when a load itself broke (errors, lost messages, a tool failed), 2
# when the binaries are missing. Loopback only. Knobs (environment): see
# tests/bench/README.md.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
TOP=$(pwd)
TARGET=${CARGO_TARGET_DIR:-${TARGET_DIR:-$TOP/target}}
case $TARGET in /*) ;; *) TARGET=$TOP/$TARGET ;; esac
B=$TARGET/release
X=$B/examples

# queue-scale.sh's QUEUED and MESSAGES, from the environment too (before
# MESSAGES is reused below).
Q_QUEUED=${BENCH_QUEUED:-${QUEUED:-100000}}
Q_MESSAGES=${BENCH_QUEUE_MESSAGES:-${MESSAGES:-2000}}
MESSAGES=${BENCH_MESSAGES:-3000}
SIZE=${BENCH_SIZE:-4K}
PER_CONN=${BENCH_PER_CONN:-1}
PIPELINING=${BENCH_PIPELINING:-1}
SESSIONS=${BENCH_SESSIONS:-1 10 50}
E2E_SESSIONS=${BENCH_E2E_SESSIONS:-10 50}
LOCAL_SESSIONS=${BENCH_LOCAL_SESSIONS:-10}
IDLE=${BENCH_IDLE:-200}
FSYNC_FILES=${BENCH_FSYNC_FILES:-$MESSAGES}
FSYNC_THREADS=${BENCH_FSYNC_THREADS:-1 16}
TIMEOUT=${BENCH_TIMEOUT:-300}
LOCAL_USER=${BENCH_LOCAL_USER:-ternbench}
TERN_USER=${BENCH_TERN_USER:-nobody}
POSTFIX=${BENCH_POSTFIX:-0}
QUEUE=${BENCH_QUEUE:-1}
KEEP=${BENCH_KEEP:-0}
PARENT=${BENCH_DIR:-$TARGET}

for p in "$B/ternd" "$X/smtp-source" "$X/smtp-sink" "$X/fsync-ceiling"; do
    [ -x "$p" ] || { echo "bench: $p missing; run: cargo build --release --bins --examples" >&2; exit 2; }
done
for n in "$MESSAGES" "$IDLE" "$FSYNC_FILES" "$TIMEOUT"; do
    case $n in '' | *[!0-9]*) echo "bench: not a number: '$n'" >&2; exit 2 ;; esac
done

mkdir -p "$PARENT" || exit 2
D=$(mktemp -d "$(cd "$PARENT" && pwd)/bench.XXXXXX") || exit 2
# Postfix's processes run as its own account and must reach their queue under D.
chmod 755 "$D"
TICK=$(getconf CLK_TCK 2>/dev/null || echo 100)

PIDS=()           # every background process we started, killed at the end
POSTFIX_DIRS=()   # every Postfix instance started, stopped at the end
declare -A R      # results: key -> value
BROKEN=()         # what went wrong with a load (makes the exit status 1)
NOTES=()

cleanup() {
    local p
    for p in "${POSTFIX_DIRS[@]}"; do tests/bench/postfix.sh stop "$p" >/dev/null 2>&1; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$KEEP" = 1 ]; then echo "bench: files kept in $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }
broke() { BROKEN+=("$*"); log "BROKEN: $*"; }

# Poll until the command $1 succeeds, at most $2 seconds, every $3 seconds
# (default 0.01). The polls share the CPUs with the load they wait for: the
# checks below fork as little as they can.
wait_for() {
    local end=$((SECONDS + $2))
    until eval "$1"; do
        [ "$SECONDS" -gt "$end" ] && return 1
        sleep "${3:-0.01}"
    done
}
# Whether smtp-sink's --count-file $1 has reached $2 (no fork).
sink_has() {
    local n=0
    read -r n 2>/dev/null <"$1"
    [ "${n:-0}" -ge "$2" ]
}

now() { date +%s.%N; }
# calc EXPR [DECIMALS]: floating point; empty when an operand is missing.
calc() {
    local e=" $1 " op='[-+*/]'
    # An operand left empty (a figure that was not measured) gives no number.
    [[ $e =~ ^[[:space:]]*$op || $e =~ ${op}[[:space:]]*$ || $e =~ ${op}[[:space:]]*$op ||
        $e =~ \([[:space:]]*($op|\)) || $e =~ ${op}[[:space:]]*\) || $e =~ ^[[:space:]]*$ ]] && return 0
    awk "BEGIN { x = $1; printf \"%.${2:-1}f\", x }" 2>/dev/null
}
# The value of KEY in the last RESULT line of FILE.
result() { awk -v k="$2" '/^RESULT/ { line = $0 } END { n = split(line, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); if (kv[1] == k) print kv[2] } }' "$1"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
# utime + stime + cutime + cstime, in clock ticks (fields 14-17 of stat; the
# command name in field 2 may hold spaces, so count from after its ")").
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }'; }
count_files() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
# A loopback port nothing uses now, for programs that cannot take port 0:
# below the kernel's ephemeral range (where the loads' own client ports come
# from), not listening, and not in any socket ss knows of.
free_port() {
    local p lo
    lo=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
    [ "${lo:-0}" -gt 12000 ] || lo=32768
    for _ in $(seq 100); do
        p=$((10000 + RANDOM % (lo - 10000)))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        if command -v ss >/dev/null 2>&1 && ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null | grep -q .; then
            continue
        fi
        echo "$p"
        return 0
    done
    return 1
}

# start_sink NAME [ARG...]: smtp-sink on a free port, counting into
# D/NAME.count, with any further arguments (--durable DIR). Sets SINK_PID and
# SINK_ADDR.
start_sink() {
    "$X/smtp-sink" -q -c 400 --count-file "$D/$1.count" "${@:2}" 127.0.0.1:0 >"$D/$1.out" 2>"$D/$1.err" </dev/null &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    if ! wait_for "grep -qs '^LISTENING' '$D/$1.out'" 10; then
        broke "smtp-sink $1 did not start: $(cat "$D/$1.err")"
        return 1
    fi
    SINK_ADDR=$(awk '/^LISTENING/ { print $2 }' "$D/$1.out")
}

stop() {
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

# start_ternd NAME KEY=VALUE...: a release ternd in the foreground on a
# free port with its spool in D/NAME. Sets TERND_PID and TERND_ADDR.
start_ternd() {
    local name=$1 dir=$D/$1
    shift
    mkdir -p "$dir"
    {
        echo "hostname = bench.test"
        echo "listen = 127.0.0.1:0"
        echo "spool = $dir/spool"
        echo "relay_networks = 127.0.0.0/8"
        # Never real DNS; routes need none.
        echo "dns_servers = 127.0.0.1:9"
        # Started as root, ternd always drops to its user (default tern, which a
        # fresh machine lacks): name an account that exists everywhere.
        [ "$(id -u)" = 0 ] && echo "user = $TERN_USER"
        for kv in "$@"; do echo "${kv%%=*} = ${kv#*=}"; done
    } >"$dir/tern.conf"
    "$B/ternd" -d -f "$dir/tern.conf" 2>"$dir/ternd.log" </dev/null &
    TERND_PID=$!
    PIDS+=("$TERND_PID")
    if ! wait_for "grep -qs 'listening on' '$dir/ternd.log'" 20; then
        broke "ternd $name did not start: $(tail -3 "$dir/ternd.log")"
        return 1
    fi
    TERND_ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$dir/ternd.log" | head -1)
}

# source NAME SESSIONS ADDR RCPT: one smtp-source load; output in D/NAME.src.
# Returns non-zero (and records the breakage) on errors.
source_load() {
    local name=$1 sessions=$2 addr=$3 rcpt=$4 p=
    [ "$PIPELINING" = 1 ] && p=-P
    "$X/smtp-source" $p -c "$sessions" -m "$MESSAGES" -s "$SIZE" -r "$PER_CONN" -w "$TIMEOUT" \
        -t "$rcpt" "$addr" >"$D/$name.src" 2>"$D/$name.srcerr" </dev/null
    local rc=$?
    if [ $rc -ne 0 ] || [ "$(result "$D/$name.src" messages)" != "$MESSAGES" ]; then
        broke "$name: smtp-source exit $rc, $(result "$D/$name.src" messages) of $MESSAGES accepted: $(head -3 "$D/$name.srcerr" | tr '\n' ' ')"
        return 1
    fi
    log "$name: $(grep '^RESULT' "$D/$name.src")"
}

# Postfix: usable only when asked for and the helper says so.
PF=0
if [ "$POSTFIX" = 1 ]; then
    if [ -x tests/bench/postfix.sh ] && tests/bench/postfix.sh available; then
        PF=1
    else
        NOTES+=("BENCH_POSTFIX=1 but tests/bench/postfix.sh available failed: Postfix loads skipped")
    fi
fi

# pf_start NAME MODE [SINKPORT]: a private Postfix in D/pf-NAME. Sets PF_DIR,
# PF_ADDR, PF_MAILDIR.
pf_start() {
    local port out
    PF_DIR=$D/pf-$1
    POSTFIX_DIRS+=("$PF_DIR")
    # A second try on another port, should something have taken the first.
    for try in 1 2; do
        port=$(free_port) || { broke "postfix $1: no free port"; return 1; }
        out=$(tests/bench/postfix.sh start "$PF_DIR" "$2" "$port" ${3:+"$3"} 2>"$D/pf-$1.err" </dev/null) && break
        if [ $try = 2 ] || ! grep -q 'in use' "$D/pf-$1.err"; then
            broke "postfix $1: start failed: $(tail -3 "$D/pf-$1.err" | tr '\n' ' ')"
            return 1
        fi
        tests/bench/postfix.sh stop "$PF_DIR" >/dev/null 2>&1
    done
    PF_ADDR=127.0.0.1:$port
    if [ -z "$PF_MEM" ]; then
        if tests/bench/postfix.sh pss "$PF_DIR" 2>/dev/null | grep -q '^pss_kb='; then PF_MEM=pss; else PF_MEM=rss; fi
    fi
    PF_MAILDIR=$(printf '%s\n' "$out" | sed -n 's/^maildir=//p')
}
pf_stop() { tests/bench/postfix.sh stop "$PF_DIR" >/dev/null 2>&1; }
# "rss_kb cpu_ticks" of the instance now.
pf_stats() {
    tests/bench/postfix.sh stats "$PF_DIR" 2>/dev/null |
        awk -v t="$TICK" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
            END { printf "%d %d\n", v["rss_kb"], v["cpu_seconds"] * t }'
}
# The instance's memory now, in kB: its proportional set size when postfix.sh
# has `pss` (shared pages split between its processes, as ternd's one process
# has them), else the sum of the processes' RSS, which counts every shared
# page once per process.
# PF_MEM (pss or rss) is decided by pf_start, in this shell: the sampler
# runs in a subshell.
PF_MEM=
pf_mem() {
    if [ "$PF_MEM" = pss ]; then
        tests/bench/postfix.sh pss "$PF_DIR" 2>/dev/null | sed -n 's/^pss_kb=//p'
    else
        pf_stats | awk '{ print $1 }'
    fi
}
# Sample the instance's memory every 500 ms, the largest into D/$1.rssmax, until killed.
pf_sampler() {
    local max=0 r
    while :; do
        r=$(pf_mem)
        [ "${r:-0}" -gt "$max" ] && max=$r && echo "$max" >"$D/$1.rssmax"
        sleep 0.5
    done
}

# The server side of a load: ternd (T) or Postfix (P); both measured the same way.
#   measure PREFIX NAME SESSIONS ADDR RCPT PIDORPF WAITCMD
# WAITCMD, if not empty, must succeed before the load counts as done (the sink
# or the Maildir has everything; polled every WAITSTEP seconds); the rate is
# then MESSAGES over the time from the start of smtp-source until it did.
cpu_of() { if [ "$1" = pf ]; then pf_stats | awk '{ print $2 }'; else cpu_ticks "$1"; fi; }
measure() {
    local key=$1 name=$2 sessions=$3 addr=$4 rcpt=$5 who=$6 waitcmd=$7 step=${8:-0.01} c0 c1 t0 t1 smp=
    c0=$(cpu_of "$who")
    if [ "$who" = pf ]; then pf_sampler "$name" & smp=$!; fi
    t0=$(now)
    source_load "$name" "$sessions" "$addr" "$rcpt" || { [ -n "$smp" ] && stop "$smp"; return 1; }
    if [ -n "$waitcmd" ] && ! wait_for "$waitcmd" "$TIMEOUT" "$step"; then
        [ -n "$smp" ] && stop "$smp"
        broke "$name: not everything arrived within ${TIMEOUT}s ($waitcmd)"
        return 1
    fi
    t1=$(now)
    [ -n "$smp" ] && stop "$smp"
    c1=$(cpu_of "$who")
    if [ -n "$waitcmd" ]; then
        R[$key.rate]=$(calc "$MESSAGES / ($t1 - $t0)")
    else
        R[$key.rate]=$(result "$D/$name.src" msgs_per_sec)
    fi
    R[$key.p50]=$(result "$D/$name.src" p50_ms)
    R[$key.p99]=$(result "$D/$name.src" p99_ms)
    R[$key.cp50]=$(result "$D/$name.src" conn_p50_ms)
    R[$key.cpu]=$(calc "($c1 - $c0) / $TICK / $MESSAGES * 1000" 2)
    if [ "$who" = pf ]; then
        R[$key.rss]=$(cat "$D/$name.rssmax" 2>/dev/null)
    else
        R[$key.rss]=$(hwm_kb "$who")
    fi
    log "$name: ${R[$key.rate]} msg/s, p50 ${R[$key.p50]} ms, ${R[$key.cpu]} CPU s per 1000, rss ${R[$key.rss]} kB"
}

echo "bench: $MESSAGES messages of $SIZE per load, $PER_CONN per connection, pipelining $([ "$PIPELINING" = 1 ] && echo on || echo off); in $D"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
echo "bench: $(nproc 2>/dev/null || echo '?') CPUs, load $LOAD0; spool filesystem: $(df -T "$D" 2>/dev/null | awk 'NR == 2 { print $2 " on " $1 }')"

# ---- 1. protocol ceiling ------------------------------------------------------
log "1. protocol ceiling: smtp-source -> smtp-sink"
if start_sink ceiling; then
    for s in $SESSIONS; do
        if source_load "ceiling-$s" "$s" "$SINK_ADDR" bench@example.test; then
            R[ceil.$s.rate]=$(result "$D/ceiling-$s.src" msgs_per_sec)
            R[ceil.$s.p50]=$(result "$D/ceiling-$s.src" p50_ms)
            R[ceil.$s.cp50]=$(result "$D/ceiling-$s.src" conn_p50_ms)
        fi
    done
    stop "$SINK_PID"
fi

# ---- 2. durability ceiling ----------------------------------------------------
log "2. durability ceiling: write 4 KiB, fsync, rename, fsync dir, in $D"
for t in $FSYNC_THREADS; do
    if "$X/fsync-ceiling" -k -t "$t" -n "$FSYNC_FILES" -s 4K "$D" >"$D/fsync-$t.out" 2>&1 </dev/null; then
        R[fsync.$t.rate]=$(result "$D/fsync-$t.out" files_per_sec)
        R[fsync.$t.p50]=$(result "$D/fsync-$t.out" p50_ms)
        log "fsync-ceiling $t threads: $(grep '^RESULT' "$D/fsync-$t.out")"
    else
        broke "fsync-ceiling -t $t failed: $(tail -2 "$D/fsync-$t.out" | tr '\n' ' ')"
    fi
done

# The durable ceiling: the least work for a durable 250 by a server that keeps
# a file per message (one file, Maildir discipline, syncs shared; smtp-sink
# --durable). Its files stay until the end, like fsync-ceiling's (-k above).
log "2. durable ceiling: smtp-source -> smtp-sink --durable $D/durable-N"
for s in $SESSIONS; do
    start_sink "durable-$s" --durable "$D/durable-$s" || continue
    if source_load "durable-$s" "$s" "$SINK_ADDR" bench@example.test; then
        R[dur.$s.rate]=$(result "$D/durable-$s.src" msgs_per_sec)
    fi
    stop "$SINK_PID"
    log "durable-$s sink: $(grep '^RESULT' "$D/durable-$s.out")"
done
# The relay ceiling: what one durable hop costs at the least, every message
# received by the durable sink and sent once more (to a plain sink), on the
# same cores at once. MESSAGES over the time both loads take.
log "2. relay ceiling: smtp-source -> smtp-sink --durable and smtp-source -> smtp-sink at once"
for s in $E2E_SESSIONS; do
    start_sink "relay-in-$s" --durable "$D/relay-$s" || continue
    in_pid=$SINK_PID in_addr=$SINK_ADDR
    if start_sink "relay-out-$s"; then
        t0=$(now)
        source_load "relay-in-$s" "$s" "$in_addr" bench@example.test &
        in_load=$!
        source_load "relay-out-$s" "$s" "$SINK_ADDR" bench@example.test &
        out_load=$!
        wait "$in_load"
        in_rc=$?
        wait "$out_load"
        out_rc=$?
        t1=$(now)
        # source_load ran in subshells: record their breakage here.
        if [ $in_rc = 0 ] && [ $out_rc = 0 ]; then
            R[relay.$s.rate]=$(calc "$MESSAGES / ($t1 - $t0)")
            log "relay ceiling, $s sessions: ${R[relay.$s.rate]} msg/s"
        else
            broke "relay ceiling, $s sessions: smtp-source failed (exit $in_rc, $out_rc): $(head -2 "$D/relay-in-$s.srcerr" "$D/relay-out-$s.srcerr" | tr '\n' ' ')"
        fi
        stop "$SINK_PID"
    fi
    stop "$in_pid"
done

# ---- 3. acceptance, and memory ------------------------------------------------
log "3. ternd accepting into its spool (queue_only = yes)"
# Idle sessions on an instance of their own, so that the busy loads' peak
# is not theirs. max_sessions well above IDLE keeps ternd out of stress mode.
if start_ternd idle queue_only=yes max_sessions=$((IDLE * 2 + 10)) max_sessions_per_ip=$((IDLE * 2 + 10)); then
    sleep 0.5
    r0=$(rss_kb "$TERND_PID")
    "$X/smtp-source" --idle -c "$IDLE" -w "$TIMEOUT" "$TERND_ADDR" >"$D/idle.out" 2>"$D/idle.err" </dev/null &
    idle_pid=$!
    PIDS+=("$idle_pid")
    if wait_for "grep -qs '^IDLE' '$D/idle.out'" 60 && grep -q "^IDLE open=$IDLE failed=0" "$D/idle.out"; then
        sleep 1
        r1=$(rss_kb "$TERND_PID")
        R[idle.base]=$r0
        R[idle.per]=$(calc "($r1 - $r0) / $IDLE")
        log "idle: ternd rss $r0 kB, with $IDLE idle sessions $r1 kB: ${R[idle.per]} kB each"
    else
        broke "idle sessions: $(cat "$D/idle.out" "$D/idle.err" | head -3 | tr '\n' ' ')"
    fi
    stop "$idle_pid"
    stop "$TERND_PID"
fi

# A fresh instance per load: an empty spool each time, and a peak RSS that is
# this load's.
for s in $SESSIONS; do
    if start_ternd "accept-$s" queue_only=yes max_sessions=100 max_sessions_per_ip=100; then
        measure "accept.$s" "accept-$s" "$s" "$TERND_ADDR" bench@example.test "$TERND_PID" ""
        stop "$TERND_PID"
    fi
done
if [ $PF = 1 ]; then
    log "3'. Postfix accepting (no delivery)"
    for s in $SESSIONS; do
        if pf_start "accept-$s" accept; then
            measure "pf.accept.$s" "pf-accept-$s" "$s" "$PF_ADDR" bench@example.test pf ""
            pf_stop
        fi
    done
fi

# ---- 4. end to end ------------------------------------------------------------
log "4. end to end: smtp-source -> ternd -> smtp-sink (route)"
for s in $E2E_SESSIONS; do
    start_sink "sink-e2e-$s" || continue
    if start_ternd "e2e-$s" "route=example.test [127.0.0.1]:${SINK_ADDR##*:}" \
        local_domains=bench.test max_sessions=100 max_sessions_per_ip=100; then
        measure "e2e.$s" "e2e-$s" "$s" "$TERND_ADDR" bench@example.test "$TERND_PID" \
            "sink_has '$D/sink-e2e-$s.count' $MESSAGES"
        # Everything delivered exactly once: wait for the queue to drain.
        wait_for "[ -z \"\$(ls -A '$D/e2e-$s/spool/env' 2>/dev/null)\" ]" 30 ||
            broke "e2e-$s: queue not empty after the sink counted everything"
        sleep 0.3
        got=$(cat "$D/sink-e2e-$s.count" 2>/dev/null || echo 0)
        [ "$got" -le "$MESSAGES" ] || broke "e2e-$s: sink counted $got of $MESSAGES sent (duplicates)"
        stop "$TERND_PID"
    fi
    stop "$SINK_PID"
done
if [ $PF = 1 ]; then
    for s in $E2E_SESSIONS; do
        start_sink "sink-pf-e2e-$s" || continue
        if pf_start "relay-$s" relay "${SINK_ADDR##*:}"; then
            measure "pf.e2e.$s" "pf-e2e-$s" "$s" "$PF_ADDR" bench@example.test pf \
                "sink_has '$D/sink-pf-e2e-$s.count' $MESSAGES"
            wait_for "tests/bench/postfix.sh queue-empty '$PF_DIR'" 30 ||
                broke "pf-e2e-$s: Postfix queue not empty after the sink counted everything"
            pf_stop
        fi
        stop "$SINK_PID"
    done
fi

# ---- 5. local delivery --------------------------------------------------------
log "5. local delivery: smtp-source -> ternd -> Maildir"
mkdir -p "$D/local-mail"
echo "$LOCAL_USER" >"$D/local-users"
# A recipient with a system account gets its mail written as that account
# (as root, through ternd's delivery helper): let it into the mail directory.
if [ "$(id -u)" = 0 ] && getent passwd "$LOCAL_USER" >/dev/null 2>&1; then
    mkdir -p "$D/local-mail/$LOCAL_USER"
    chown "$LOCAL_USER" "$D/local-mail/$LOCAL_USER"
elif [ "$(id -u)" = 0 ]; then
    # No such account: ternd, dropped to its user, delivers it itself.
    chown "$TERN_USER" "$D/local-mail"
fi
for s in $LOCAL_SESSIONS; do
    rm -rf "$D/local-mail/$LOCAL_USER/new"
    new=$D/local-mail/$LOCAL_USER/new
    if start_ternd "local-$s" local_domains=localhost "local_users=$D/local-users" \
        "mailbox=$D/local-mail/%u/" max_sessions=100 max_sessions_per_ip=100; then
        measure "local.$s" "local-$s" "$s" "$TERND_ADDR" "$LOCAL_USER@localhost" "$TERND_PID" \
            "[ \$(count_files '$new') -ge $MESSAGES ]" 0.05
        got=$(count_files "$new")
        [ "$got" -le "$MESSAGES" ] || broke "local-$s: $got messages in new/ for $MESSAGES sent"
        stop "$TERND_PID"
    fi
    # Keep the disk use of a long run down.
    rm -rf "$D/local-mail/$LOCAL_USER/new" "$D/local-mail/$LOCAL_USER/cur"
done
if [ $PF = 1 ]; then
    for s in $LOCAL_SESSIONS; do
        if pf_start "local-$s" local; then
            if [ -z "$PF_MAILDIR" ]; then
                broke "pf-local-$s: postfix.sh start printed no maildir="
            else
                measure "pf.local.$s" "pf-local-$s" "$s" "$PF_ADDR" bench@localhost pf \
                    "[ \$(count_files '$PF_MAILDIR') -ge $MESSAGES ]" 0.05
            fi
            pf_stop
        fi
    done
fi

# ---- queue scale --------------------------------------------------------------
if [ "$QUEUE" != 0 ] && [ -x tests/bench/queue-scale.sh ]; then
    log "queue scale: tests/bench/queue-scale.sh, QUEUED=$Q_QUEUED MESSAGES=$Q_MESSAGES"
    if QUEUED=$Q_QUEUED MESSAGES=$Q_MESSAGES tests/bench/queue-scale.sh >"$D/queue-scale.out" 2>&1 </dev/null; then
        tail -1 "$D/queue-scale.out" >"$D/qs.last"
        R[queue.ratio]=$(result "$D/qs.last" ratio)
        R[queue.empty]=$(result "$D/qs.last" empty_msgs_per_sec)
        R[queue.loaded]=$(result "$D/qs.last" loaded_msgs_per_sec)
        [ -n "${R[queue.ratio]}" ] || broke "queue-scale.sh: no RESULT line: $(tail -2 "$D/queue-scale.out" | tr '\n' ' ')"
    else
        broke "queue-scale.sh failed: $(tail -3 "$D/queue-scale.out" | tr '\n' ' ')"
    fi
elif [ "$QUEUE" != 0 ]; then
    NOTES+=("tests/bench/queue-scale.sh not found: queue-scale target not measured")
fi

# ---- the table ----------------------------------------------------------------
v() { printf '%s' "${R[$1]-}"; }
# ratio A B [DECIMALS]: A/B, empty if either is missing or B is 0.
ratio() {
    [ -n "$1" ] && [ -n "$2" ] || return 0
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b + 0 != 0) printf "%.*f", d, a / b }'
}
# verdict VALUE OP LIMIT: met / NOT met / n/a.
verdict() {
    [ -n "$1" ] || { printf 'n/a'; return; }
    awk -v x="$1" -v op="$2" -v l="$3" 'BEGIN {
        ok = (op == ">=") ? (x + 0 >= l + 0) : (x + 0 <= l + 0)
        printf "%s", ok ? "met" : "NOT met" }'
}
FMT='%-36s %9s %9s %7s %9s %7s  %-14s %s\n'
MET=0 NOT_MET=0 NA=0
row() {
    printf "$FMT" "$1" "${2:--}" "${3:-}" "${4:-}" "${5:-}" "${6:-}" "${7:-}" "${8:-}"
    case ${8:-} in
    met) MET=$((MET + 1)) ;;
    "NOT met") NOT_MET=$((NOT_MET + 1)) ;;
    n/a) NA=$((NA + 1)) ;;
    esac
}
# A figure compared with a ceiling and maybe Postfix.
#   cmp LABEL VALUE CEILING PFVALUE [TARGET_CEIL_OP LIMIT] [PF_OP LIMIT]
cmp() {
    local label=$1 val=$2 ceil=$3 pf=$4 rc rp tgt="" res=""
    rc=$(ratio "$val" "$ceil")
    rp=$(ratio "$val" "$pf")
    if [ -n "${5:-}" ]; then tgt="$5 $6 x ceil"; res=$(verdict "$rc" "$5" "$6"); fi
    row "$label" "$val" "$ceil" "$rc" "$pf" "$rp" "$tgt" "$res"
    if [ -n "${7:-}" ] && [ $PF = 1 ]; then
        row "  ...against Postfix" " " "" "" "" "$rp" "$7 $8 x pf" "$(verdict "$rp" "$7" "$8")"
    fi
}

s_first=$(echo "$SESSIONS" | awk '{ print $1 }')
lat_ceil=$(calc "$(v ceil.$s_first.p50) + $(v fsync.1.p50)" 3)
rss_busy_mib=$(calc "$(v accept.50.rss) / 1024")
loads="$(for s in $SESSIONS; do echo accept.$s; done) $(for s in $E2E_SESSIONS; do echo e2e.$s; done) $(for s in $LOCAL_SESSIONS; do echo local.$s; done)"

echo
echo "=== tern benchmark: $MESSAGES x $SIZE per load, $(nproc 2>/dev/null) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC') ==="
echo "Rates in messages (files) per second; ratios against the ceilings of this same run."
if [ $PF = 1 ]; then
    echo "tern/pf: tern's figure over Postfix's (for rates higher is better; for latency, memory and CPU lower is)."
    echo "Postfix memory: the peak of its processes' $([ "$PF_MEM" = pss ] && echo "PSS (shared pages split)" || echo "summed RSS (shared pages counted per process)"), sampled every 500 ms; tern's: VmHWM."
fi
printf "$FMT" "figure" "tern" "ceiling" "x ceil" "postfix" "tern/pf" "target" "result"
printf '%s\n' "------------------------------------------------------------------------------------------------------------"
for s in $SESSIONS; do
    row "protocol ceiling, $s sess, msg/s" "$(v ceil.$s.rate)"
done
for t in $FSYNC_THREADS; do
    row "durability ceiling, $t thr, files/s" "$(v fsync.$t.rate)"
done
for s in $SESSIONS; do
    row "durable ceiling, $s sess, msg/s" "$(v dur.$s.rate)" "$(v ceil.$s.rate)" "$(ratio "$(v dur.$s.rate)" "$(v ceil.$s.rate)")"
done
for s in $E2E_SESSIONS; do
    row "relay ceiling, $s sess, msg/s" "$(v relay.$s.rate)" "$(v ceil.$s.rate)" "$(ratio "$(v relay.$s.rate)" "$(v ceil.$s.rate)")"
done
for s in $SESSIONS; do
    if [ "$s" = 10 ]; then
        cmp "accept, 10 sess, msg/s" "$(v accept.10.rate)" "$(v ceil.10.rate)" "$(v pf.accept.10.rate)" ">=" 0.6 ">=" 1.5
    else
        cmp "accept, $s sess, msg/s" "$(v accept.$s.rate)" "$(v ceil.$s.rate)" "$(v pf.accept.$s.rate)"
    fi
done
for s in $SESSIONS; do
    row "accept $s sess / durable ceiling" "$(v accept.$s.rate)" "$(v dur.$s.rate)" "$(ratio "$(v accept.$s.rate)" "$(v dur.$s.rate)")"
done
for t in $FSYNC_THREADS; do
    [ "$t" = 1 ] && continue
    row "accept 10 sess / durability $t thr" "$(v accept.10.rate)" "$(v fsync.$t.rate)" "$(ratio "$(v accept.10.rate)" "$(v fsync.$t.rate)")"
done
cmp "latency p50, $s_first sess, ms" "$(v accept.$s_first.p50)" "$lat_ceil" "$(v pf.accept.$s_first.p50)" "<=" 2
cmp "  from connect, p50, ms" "$(v accept.$s_first.cp50)" "$(calc "$(v ceil.$s_first.cp50) + $(v fsync.1.p50)" 3)" "$(v pf.accept.$s_first.cp50)"
row "latency p99, $s_first sess, ms" "$(v accept.$s_first.p99)" "" "" "$(v pf.accept.$s_first.p99)" "$(ratio "$(v accept.$s_first.p99)" "$(v pf.accept.$s_first.p99)")"
for s in $E2E_SESSIONS; do
    if [ "$s" = 10 ]; then
        cmp "end to end, 10 sess, msg/s" "$(v e2e.10.rate)" "$(v ceil.10.rate)" "$(v pf.e2e.10.rate)" ">=" 0.4 ">=" 1.5
    else
        cmp "end to end, $s sess, msg/s" "$(v e2e.$s.rate)" "$(v ceil.$s.rate)" "$(v pf.e2e.$s.rate)"
    fi
done
for s in $E2E_SESSIONS; do
    row "end to end $s sess / relay ceiling" "$(v e2e.$s.rate)" "$(v relay.$s.rate)" "$(ratio "$(v e2e.$s.rate)" "$(v relay.$s.rate)")"
done
for s in $LOCAL_SESSIONS; do
    cmp "local delivery, $s sess, msg/s" "$(v local.$s.rate)" "$(v ceil.$s.rate)" "$(v pf.local.$s.rate)"
done
sc=$(ratio "$(v accept.50.rate)" "$(v accept.10.rate)")
row "scaling: accept 50 / accept 10" "$sc" "" "" "" "" ">= 1" "$(verdict "$sc" ">=" 1)"
sc=$(ratio "$(v e2e.50.rate)" "$(v e2e.10.rate)")
[ -n "$sc" ] && row "scaling: end to end 50 / 10" "$sc" "" "" "" "" ">= 1" "$(verdict "$sc" ">=" 1)"
pfb=$(calc "$(v pf.accept.50.rss) / 1024")
row "RSS peak, 50 busy sessions, MiB" "$rss_busy_mib" "" "" "$pfb" "$(ratio "$rss_busy_mib" "$pfb")" "<= 64 MiB" "$(verdict "$rss_busy_mib" "<=" 64)"
row "RSS per idle session, KiB" "$(v idle.per)" "" "" "" "" "<= 256 KiB" "$(verdict "$(v idle.per)" "<=" 256)"
row "RSS ternd, no session, MiB" "$(calc "$(v idle.base) / 1024")"
for k in $loads; do
    [ "$k" = accept.50 ] && continue
    [ -n "$(v $k.rss)" ] || continue
    pfr=$(calc "$(v pf.$k.rss) / 1024")
    row "RSS peak, ${k/./ }, MiB" "$(calc "$(v $k.rss) / 1024")" "" "" "$pfr" "$(ratio "$(calc "$(v $k.rss) / 1024")" "$pfr")"
done
for k in $loads; do
    [ -n "$(v $k.cpu)" ] || continue
    row "CPU s / 1000 msgs, ${k/./ }" "$(v $k.cpu)" "" "" "$(v pf.$k.cpu)" "$(ratio "$(v $k.cpu)" "$(v pf.$k.cpu)")"
done
if [ -n "$(v queue.ratio)" ]; then
    row "queue scale: loaded/empty rate" "$(v queue.ratio)" "" "" "" "" ">= 0.8 (~1)" "$(verdict "$(v queue.ratio)" ">=" 0.8)"
    row "  relay rate, empty queue, msg/s" "$(v queue.empty)"
    row "  relay rate, $Q_QUEUED queued, msg/s" "$(v queue.loaded)"
fi
echo
echo "Latency: from MAIL (from connect) to the 250 after DATA; its ceiling = protocol ceiling p50 $(v ceil.$s_first.p50) ms ($(v ceil.$s_first.cp50) ms)"
echo "  + durability ceiling p50, 1 thread, $(v fsync.1.p50) ms: the least a durable 250 can take."
echo "Durable ceiling: smtp-sink --durable, each message written to tmp/, synced, renamed into new/ and the rename"
echo "  synced before its 250 (both syncs shared by the sessions waiting): the least work for a durable 250 by a"
echo "  server that keeps a file per message. Relay ceiling: that load and a protocol ceiling load at once (every"
echo "  message stored durably and sent on once)."
# Where a target lies above what the disk allows at all, say so.
dur10=$(ratio "$(v dur.10.rate)" "$(v ceil.10.rate)")
relay10=$(ratio "$(v relay.10.rate)" "$(v ceil.10.rate)")
if [ -n "$dur10" ] && awk -v x="$dur10" 'BEGIN { exit !(x < 0.6) }'; then
    echo "  The acceptance target (0.6 x the protocol ceiling) is above the durable ceiling here ($dur10 x): a server"
    echo "  keeping a file per message must beat that least store $(ratio 0.6 "$dur10") times over to meet it; tern reaches $(ratio "$(v accept.10.rate)" "$(v dur.10.rate)") of it."
fi
if [ -n "$relay10" ] && awk -v x="$relay10" 'BEGIN { exit !(x < 0.4) }'; then
    echo "  The end-to-end target (0.4 x) is above the relay ceiling here ($relay10 x), $(ratio 0.4 "$relay10") times over; tern reaches $(ratio "$(v e2e.10.rate)" "$(v relay.10.rate)") of it."
fi
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (at the start: $LOAD0); on a busy machine every figure is noisy."
for n in "${NOTES[@]}"; do echo "note: $n"; done
# One machine-readable line, for notes and scripts.
echo "BENCH messages=$MESSAGES size=$SIZE accept10_x_ceil=$(ratio "$(v accept.10.rate)" "$(v ceil.10.rate)")" \
    "e2e10_x_ceil=$(ratio "$(v e2e.10.rate)" "$(v ceil.10.rate)") latency_x_ceil=$(ratio "$(v accept.$s_first.p50)" "$lat_ceil")" \
    "accept10_x_pf=$(ratio "$(v accept.10.rate)" "$(v pf.accept.10.rate)") e2e10_x_pf=$(ratio "$(v e2e.10.rate)" "$(v pf.e2e.10.rate)")" \
    "durable10_x_ceil=$dur10 relay10_x_ceil=$relay10" \
    "accept10_x_durable=$(ratio "$(v accept.10.rate)" "$(v dur.10.rate)") e2e10_x_relay=$(ratio "$(v e2e.10.rate)" "$(v relay.10.rate)")" \
    "rss_busy_mib=$rss_busy_mib idle_kib=$(v idle.per) queue_ratio=$(v queue.ratio)" \
    "met=$MET not_met=$NOT_MET na=$NA broken=${#BROKEN[@]}"
if [ ${#BROKEN[@]} -gt 0 ]; then
    echo "BROKEN loads (exit 1):"
    for b in "${BROKEN[@]}"; do echo "  $b"; done
    exit 1
fi
exit 0
