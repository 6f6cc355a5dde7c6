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
#   6. a neighbour (issue 21): acceptance at 1/10/50 sessions with spool_sync =
#      fsync and syncfs (and Postfix), each without and with a process rewriting
#      a file on the same filesystem (tests/bench/neighbour.rs)
#   + ternd's peak RSS and CPU seconds per 1,000 messages for each load
#   + the same loads against a private Postfix (BENCH_POSTFIX=1, tests/bench/postfix.sh)
#   + queue-scale.sh, when present (BENCH_QUEUE=0 skips it)
#   7. BENCH_SCRIPTS, one after the other (the Makefile: tests/bench/chunking.sh,
#      DATA against BDAT with 1 and 10 MiB messages, tern against Postfix)
#
# Every load that is compared with another runs in BENCH_ROUNDS rounds (3 with
# Postfix, else 1), the two sides taking turns (tern, Postfix, tern, Postfix...;
# quiet, busy, busy, quiet...), so that a moment of a shared machine weighs on
# both alike. Then a table of each figure (the median of its rounds), its ratio
# to the ceiling measured in this run, the median of the per-round tern/Postfix
# ratios with their spread, and the targets of issues 9 and 21, "met" or "NOT
# met"; and one of the neighbour loads.
# A missed target never fails the run: it is a benchmark. The exit status is
# 1 only when a load itself broke (errors, lost messages, a tool failed), 2
# when the binaries are missing. Loopback only. Knobs (environment): see
# tests/bench/README.md.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

# queue-scale.sh's QUEUED and MESSAGES, from the environment too (before
# MESSAGES is reused below).
Q_QUEUED=${BENCH_QUEUED:-${QUEUED:-100000}}
Q_MESSAGES=${BENCH_QUEUE_MESSAGES:-${MESSAGES:-2000}}
MESSAGES=${BENCH_MESSAGES:-3000}
SIZE=${BENCH_SIZE:-4K}
PER_CONN=${BENCH_PER_CONN:-1}
PIPELINING=${BENCH_PIPELINING:-1}
SESSIONS=${BENCH_SESSIONS-1 10 50}
E2E_SESSIONS=${BENCH_E2E_SESSIONS-10 50}
LOCAL_SESSIONS=${BENCH_LOCAL_SESSIONS-10}
IDLE=${BENCH_IDLE:-200}
FSYNC_FILES=${BENCH_FSYNC_FILES:-$MESSAGES}
FSYNC_THREADS=${BENCH_FSYNC_THREADS-1 16}
TIMEOUT=${BENCH_TIMEOUT:-300}
LOCAL_USER=${BENCH_LOCAL_USER:-ternbench}
TERN_USER=${BENCH_TERN_USER:-nobody}
POSTFIX=${BENCH_POSTFIX:-0}
QUEUE=${BENCH_QUEUE:-1}
# Further benchmark scripts, run after the loads here (the Makefile's list).
SCRIPTS=${BENCH_SCRIPTS-}
KEEP=${BENCH_KEEP:-0}
PARENT=${BENCH_DIR:-$TARGET}
# Rounds of every load that is compared with another (tern with Postfix, with
# and without the neighbour, syncfs with fsync): 3 side by side with Postfix,
# 1 without (the plain run stays short enough for CI).
ROUNDS=${BENCH_ROUNDS:-$([ "$POSTFIX" = 1 ] && echo 3 || echo 1)}
NEIGHBOUR=${BENCH_NEIGHBOUR:-1}
NB_SESSIONS=${BENCH_NB_SESSIONS-1 10 50}
NB_MESSAGES=${BENCH_NB_MESSAGES:-1000}
NB_SIZE=${BENCH_NB_SIZE:-256M}
NB_RATE=${BENCH_NB_RATE:-256}
# tern's default spool_sync, which the neighbour targets are about: etc/tern.conf
# shows every default as a commented-out line.
DEFAULT_SYNC=$(sed -n 's/^#spool_sync = \([a-z]*\).*/\1/p' etc/tern.conf 2>/dev/null | head -1)

for p in "$B/ternd" "$X/smtp-source" "$X/smtp-sink" "$X/fsync-ceiling" "$X/neighbour"; do
    [ -x "$p" ] || { echo "bench: $p missing; run: cargo build --release --bins --examples" >&2; exit 2; }
done
for n in "$MESSAGES" "$IDLE" "$FSYNC_FILES" "$TIMEOUT" "$ROUNDS" "$NB_MESSAGES" "$NB_RATE"; do
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
v() { printf '%s' "${R[$1]-}"; }
# ratio A B [DECIMALS]: A/B, empty if either is missing or B is 0.
ratio() {
    [ -n "$1" ] && [ -n "$2" ] || return 0
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b + 0 != 0) printf "%.*f", d, a / b }'
}
# stats_of NUMBER...: "median lowest highest" of the non-empty arguments,
# nothing when there are none.
stats_of() {
    printf '%s\n' "$@" | grep . | sort -g |
        awk '{ x[++n] = $1 } END { if (n) print (n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2), x[1], x[n] }'
}
# summarize KEY: each figure of load KEY (KEY.FIELD) is the median of its
# rounds' (KEY.rN.FIELD), empty when no round measured it.
summarize() {
    local f r m vals
    for f in rate p50 p99 cp50 cpu rss; do
        vals=()
        for ((r = 1; r <= ROUNDS; r++)); do vals+=("${R[$1.r$r.$f]-}"); done
        read -r m _ <<<"$(stats_of "${vals[@]}")"
        [ -z "$m" ] && continue
        case $f in rss) R[$1.$f]=$(calc "$m" 0) ;; rate) R[$1.$f]=$(calc "$m" 1) ;; cpu) R[$1.$f]=$(calc "$m" 2) ;; *) R[$1.$f]=$(calc "$m" 3) ;; esac
    done
}
# ratio_rounds A B FIELD: A.rN.FIELD / B.rN.FIELD in each round N that has
# both; RS_MED is their median, RS_SPREAD "lowest-highest" (both empty when no
# round has both).
ratio_rounds() {
    local r vals=() med lo hi
    for ((r = 1; r <= ROUNDS; r++)); do vals+=("$(ratio "${R[$1.r$r.$3]-}" "${R[$2.r$r.$3]-}" 4)"); done
    read -r med lo hi <<<"$(stats_of "${vals[@]}")"
    RS_MED=$(calc "$med" 2) RS_SPREAD=
    [ -n "$med" ] && RS_SPREAD="$(calc "$lo" 2)-$(calc "$hi" 2)"
    return 0
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
    local name=$1
    shift
    # Never real DNS; routes need none.
    if ! ternd_start "$D/$name" hostname=bench.test relay_networks=127.0.0.0/8 dns_servers=127.0.0.1:9 "$@"; then
        broke "ternd $name did not start: $(tail -3 "$D/$name/ternd.log")"
        return 1
    fi
}

# source NAME SESSIONS ADDR RCPT: one smtp-source load; output in D/NAME.src.
# Returns non-zero (and records the breakage) on errors.
# LOAD_MESSAGES, when set, replaces MESSAGES.
source_load() {
    local name=$1 sessions=$2 addr=$3 rcpt=$4 p= n=${LOAD_MESSAGES:-$MESSAGES}
    [ "$PIPELINING" = 1 ] && p=-P
    "$X/smtp-source" $p -c "$sessions" -m "$n" -s "$SIZE" -r "$PER_CONN" -w "$TIMEOUT" \
        -t "$rcpt" "$addr" >"$D/$name.src" 2>"$D/$name.srcerr" </dev/null
    local rc=$?
    if [ $rc -ne 0 ] || [ "$(result "$D/$name.src" messages)" != "$n" ]; then
        broke "$name: smtp-source exit $rc, $(result "$D/$name.src" messages) of $n accepted: $(head -3 "$D/$name.srcerr" | tr '\n' ' ')"
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
        R[$key.rate]=$(calc "${LOAD_MESSAGES:-$MESSAGES} / ($t1 - $t0)")
    else
        R[$key.rate]=$(result "$D/$name.src" msgs_per_sec)
    fi
    R[$key.p50]=$(result "$D/$name.src" p50_ms)
    R[$key.p99]=$(result "$D/$name.src" p99_ms)
    R[$key.cp50]=$(result "$D/$name.src" conn_p50_ms)
    R[$key.cpu]=$(calc "($c1 - $c0) / $TICK / ${LOAD_MESSAGES:-$MESSAGES} * 1000" 2)
    if [ "$who" = pf ]; then
        R[$key.rss]=$(cat "$D/$name.rssmax" 2>/dev/null)
    else
        R[$key.rss]=$(hwm_kb "$who")
    fi
    log "$name: ${R[$key.rate]} msg/s, p50 ${R[$key.p50]} ms, ${R[$key.cpu]} CPU s per 1000, rss ${R[$key.rss]} kB"
}

echo "bench: $MESSAGES messages of $SIZE per load, $PER_CONN per connection, pipelining $([ "$PIPELINING" = 1 ] && echo on || echo off), $ROUNDS round(s) of each compared load; in $D"
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
if [ "$IDLE" -gt 0 ] && start_ternd idle queue_only=yes max_sessions=$((IDLE * 2 + 10)) max_sessions_per_ip=$((IDLE * 2 + 10)); then
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

# One acceptance load of ternd: a fresh instance (an empty spool each time, and
# a peak RSS that is this load's). tern_accept KEY NAME SESSIONS [KEY=VALUE...]
tern_accept() {
    local key=$1 name=$2 s=$3
    shift 3
    start_ternd "$name" queue_only=yes "${TERN_LIMITS[@]}" "$@" || return 1
    measure "$key" "$name" "$s" "$TERND_ADDR" bench@example.test "$TERND_PID" ""
    stop "$TERND_PID"
}
pf_accept() {
    pf_start "$2" accept || return 1
    measure "$1" "pf-$2" "$3" "$PF_ADDR" bench@example.test pf ""
    pf_stop
}
# Rounds: ternd and Postfix take turns at each load, so that both see the same
# moments of a shared machine; the table gives medians, and the median of the
# per-round ratios with their spread.
for ((r = 1; r <= ROUNDS; r++)); do
    for s in $SESSIONS; do
        tern_accept "accept.$s.r$r" "accept-$s-r$r" "$s"
        [ $PF = 1 ] && pf_accept "pf.accept.$s.r$r" "accept-$s-r$r" "$s"
    done
done
for s in $SESSIONS; do summarize "accept.$s" && summarize "pf.accept.$s"; done

# ---- 4. end to end ------------------------------------------------------------
log "4. end to end: smtp-source -> ternd -> smtp-sink (route)"
tern_e2e() {
    local key=$1 name=$2 s=$3
    start_sink "sink-$name" || return 1
    if start_ternd "$name" "route=example.test [127.0.0.1]:${SINK_ADDR##*:}" \
        local_domains=bench.test "${TERN_LIMITS[@]}"; then
        measure "$key" "$name" "$s" "$TERND_ADDR" bench@example.test "$TERND_PID" \
            "sink_has '$D/sink-$name.count' $MESSAGES"
        # Everything delivered exactly once: wait for the queue to drain.
        wait_for "[ -z \"\$(ls -A '$D/$name/spool/env' 2>/dev/null)\" ]" 30 ||
            broke "$name: queue not empty after the sink counted everything"
        sleep 0.3
        got=$(cat "$D/sink-$name.count" 2>/dev/null || echo 0)
        [ "$got" -le "$MESSAGES" ] || broke "$name: sink counted $got of $MESSAGES sent (duplicates)"
        stop "$TERND_PID"
    fi
    stop "$SINK_PID"
}
pf_e2e() {
    local key=$1 name=$2 s=$3
    start_sink "sink-pf-$name" || return 1
    if pf_start "$name" relay "${SINK_ADDR##*:}"; then
        measure "$key" "pf-$name" "$s" "$PF_ADDR" bench@example.test pf \
            "sink_has '$D/sink-pf-$name.count' $MESSAGES"
        wait_for "tests/bench/postfix.sh queue-empty '$PF_DIR'" 30 ||
            broke "pf-$name: Postfix queue not empty after the sink counted everything"
        pf_stop
    fi
    stop "$SINK_PID"
}
for ((r = 1; r <= ROUNDS; r++)); do
    for s in $E2E_SESSIONS; do
        tern_e2e "e2e.$s.r$r" "e2e-$s-r$r" "$s"
        [ $PF = 1 ] && pf_e2e "pf.e2e.$s.r$r" "e2e-$s-r$r" "$s"
    done
done
for s in $E2E_SESSIONS; do summarize "e2e.$s" && summarize "pf.e2e.$s"; done

# ---- 5. local delivery --------------------------------------------------------
log "5. local delivery: smtp-source -> ternd -> Maildir"
echo "$LOCAL_USER" >"$D/local-users"
# A Maildir per load: removing thousands of files would slow the loads after it
# (ext4 without a journal, see fsync-ceiling in README.md).
tern_local() {
    local key=$1 name=$2 s=$3 mail=$D/$2-mail new
    mkdir -p "$mail"
    new=$mail/$LOCAL_USER/new
    # A recipient with a system account gets its mail written as that account
    # (as root, through ternd's delivery helper): let it into the mail directory.
    if [ "$(id -u)" = 0 ] && getent passwd "$LOCAL_USER" >/dev/null 2>&1; then
        mkdir -p "$mail/$LOCAL_USER"
        chown "$LOCAL_USER" "$mail/$LOCAL_USER"
    elif [ "$(id -u)" = 0 ]; then
        # No such account: ternd, dropped to its user, delivers it itself.
        chown "$TERN_USER" "$mail"
    fi
    start_ternd "$name" local_domains=localhost "local_users=$D/local-users" \
        "mailbox=$mail/%u/" "${TERN_LIMITS[@]}" || return 1
    measure "$key" "$name" "$s" "$TERND_ADDR" "$LOCAL_USER@localhost" "$TERND_PID" \
        "[ \$(count_files '$new') -ge $MESSAGES ]" 0.05
    got=$(count_files "$new")
    [ "$got" -le "$MESSAGES" ] || broke "$name: $got messages in new/ for $MESSAGES sent"
    stop "$TERND_PID"
}
pf_local() {
    pf_start "$2" local || return 1
    if [ -z "$PF_MAILDIR" ]; then
        broke "pf-$2: postfix.sh start printed no maildir="
    else
        measure "$1" "pf-$2" "$3" "$PF_ADDR" bench@localhost pf \
            "[ \$(count_files '$PF_MAILDIR') -ge $MESSAGES ]" 0.05
    fi
    pf_stop
}
for ((r = 1; r <= ROUNDS; r++)); do
    for s in $LOCAL_SESSIONS; do
        tern_local "local.$s.r$r" "local-$s-r$r" "$s"
        [ $PF = 1 ] && pf_local "pf.local.$s.r$r" "local-$s-r$r" "$s"
    done
done
for s in $LOCAL_SESSIONS; do summarize "local.$s" && summarize "pf.local.$s"; done

# ---- 6. a neighbour writing to the same filesystem -------------------------
# Acceptance (NB_MESSAGES per load) with each spool_sync and with Postfix, each
# without and with a neighbour process rewriting a file of NB_SIZE in D at
# NB_RATE MiB/s (buffered, never synced). In each round every variant takes
# its quiet and its busy load back to back, in turns (quiet first in odd
# rounds, busy first in even ones), so that each ratio compares loads a few
# seconds apart.
nb_start() {
    "$X/neighbour" -s "$NB_SIZE" -r "$NB_RATE" "$D/neighbour.data" >"$D/$1.nb" 2>&1 </dev/null &
    NB_PID=$!
    PIDS+=("$NB_PID")
    if ! wait_for "grep -qs '^READY' '$D/$1.nb'" 120 0.05; then
        broke "$1: the neighbour did not get going: $(tail -2 "$D/$1.nb" | tr '\n' ' ')"
        stop "$NB_PID"
        return 1
    fi
}
# Its file goes with it, and with the file its dirty pages, unwritten: the next
# load does not pay for them.
nb_stop() {
    stop "$NB_PID"
    R[$2.nbrate]=$(result "$D/$1.nb" mib_per_sec)
}
# nb_load VARIANT BUSY KEY NAME SESSIONS: one acceptance load of ternd
# (VARIANT = a spool_sync value) or Postfix (pf), with the neighbour if BUSY=1.
nb_load() {
    local v=$1 busy=$2 key=$3 name=$4 s=$5 who addr
    if [ "$v" = pf ]; then
        pf_start "$name" accept || return 1
        who=pf addr=$PF_ADDR
    else
        start_ternd "$name" queue_only=yes "${TERN_LIMITS[@]}" "spool_sync=$v" || return 1
        who=$TERND_PID addr=$TERND_ADDR
    fi
    if [ "$busy" = 1 ] && ! nb_start "$name"; then
        if [ "$v" = pf ]; then pf_stop; else stop "$TERND_PID"; fi
        return 1
    fi
    LOAD_MESSAGES=$NB_MESSAGES measure "$key" "$name" "$s" "$addr" bench@example.test "$who" ""
    [ "$busy" = 1 ] && nb_stop "$name" "$key"
    if [ "$v" = pf ]; then pf_stop; else stop "$TERND_PID"; fi
}
if [ "$NEIGHBOUR" = 1 ]; then
    NB_VARIANTS="fsync syncfs"
    [ $PF = 1 ] && NB_VARIANTS="$NB_VARIANTS pf"
    log "6. neighbour: $NB_MESSAGES messages per load, $NB_SIZE rewritten at $([ "$NB_RATE" = 0 ] && echo "full speed" || echo "$NB_RATE MiB/s") beside; $NB_VARIANTS"
    for ((r = 1; r <= ROUNDS; r++)); do
        for s in $NB_SESSIONS; do
            for v in $NB_VARIANTS; do
                for busy in $([ $((r % 2)) = 1 ] && echo 0 1 || echo 1 0); do
                    nb_load "$v" "$busy" "nb.$v.$busy.$s.r$r" "nb-$v-$busy-$s-r$r" "$s"
                done
            done
        done
    done
    for s in $NB_SESSIONS; do
        for v in $NB_VARIANTS; do summarize "nb.$v.0.$s" && summarize "nb.$v.1.$s"; done
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

# ---- 7. further scripts -------------------------------------------------------
# BENCH_SCRIPTS (the Makefile's list; tests/bench/chunking.sh by default): each
# runs after the loads above, on its own, with this run's settings in its
# environment (BENCH_ROUNDS, BENCH_POSTFIX = whether Postfix runs here,
# BENCH_DIR = this run's directory, BENCH_BIN). Its standard output is its
# table, whose last line is `BENCH key=value...`: the table is printed after
# ours and the keys join our BENCH line. Exit 1: a load broke; 2: it cannot run.
SCRIPT_OUT=()
for script in $SCRIPTS; do
    name=$(basename "$script" .sh)
    if [ ! -x "$script" ]; then
        broke "$script (BENCH_SCRIPTS) not found or not executable"
        continue
    fi
    log "$name: $script"
    BENCH_ROUNDS=$ROUNDS BENCH_POSTFIX=$PF BENCH_DIR=$D BENCH_BIN=$B BENCH_KEEP=$KEEP \
        "$script" >"$D/script-$name.out" 2> >(sed -u "s/^/bench: $name: /" >&2) </dev/null
    rc=$?
    SCRIPT_OUT+=("$D/script-$name.out")
    [ $rc = 0 ] || broke "$script exited $rc: $(grep -v '^BENCH ' "$D/script-$name.out" | tail -2 | tr '\n' ' ')"
    grep -q '^BENCH ' "$D/script-$name.out" || broke "$script printed no BENCH line"
done

# ---- the table ----------------------------------------------------------------
# verdict VALUE OP LIMIT: met / NOT met / n/a.
verdict() {
    [ -n "$1" ] || { printf 'n/a'; return; }
    awk -v x="$1" -v op="$2" -v l="$3" 'BEGIN {
        ok = (op == ">=") ? (x + 0 >= l + 0) : (x + 0 <= l + 0)
        printf "%s", ok ? "met" : "NOT met" }'
}
FMT='%-36s %9s %9s %7s %9s %7s %-11s %-14s %s\n'
MET=0 NOT_MET=0 NA=0
count_verdict() {
    case ${1:-} in
    met) MET=$((MET + 1)) ;;
    "NOT met") NOT_MET=$((NOT_MET + 1)) ;;
    n/a) NA=$((NA + 1)) ;;
    esac
}
# Every row of the tables also puts its figures on the BENCH line (ROWK), under a
# key made from its label: "accept, 10 sess, msg/s" is accept_10s (tern's
# figure), accept_10s_ceil, _x_ceil, _pf, _x_pf, _x_pf_spread and _met (yes or
# no, when it has a target). A label that begins with spaces continues the row
# above it: its key is that row's key and its own.
ROWK=()
LASTKEY=
slug() {
    printf '%s' "$1" | tr 'A-Z' 'a-z' |
        sed -e 's/^cpu s \/ 1000 msgs/cpu_per_1000/; s/\.\.\.//g; s/ sess\b/s/g; s/ thr\b/t/g; s/, \(msg\|files\)\/s//g; s/, ms$//; s/ \/ /_x_/g' \
            -e 's/[^a-z0-9]\{1,\}/_/g; s/^_//; s/_$//'
}
# bench_keys KEY NAME=VALUE...: KEY_NAME=VALUE for each non-empty VALUE (NAME
# empty: KEY=VALUE), onto the BENCH line.
bench_keys() {
    local k=$1 kv n val
    shift
    for kv in "$@"; do
        n=${kv%%=*} val=${kv#*=}
        val=${val// /}
        [ -n "$val" ] || continue
        ROWK+=("$k${n:+_$n}=$val")
    done
}
#   row LABEL TERN CEILING XCEIL POSTFIX TERN/PF SPREAD TARGET RESULT
row() {
    printf "$FMT" "$1" "${2:--}" "${3:-}" "${4:-}" "${5:-}" "${6:-}" "${7:-}" "${8:-}" "${9:-}"
    count_verdict "${9:-}"
    local key met=
    if [[ $1 == " "* ]]; then key=${LASTKEY}_$(slug "$1"); else key=$(slug "$1") LASTKEY=$(slug "$1"); fi
    case ${9:-} in met) met=yes ;; "NOT met") met=no ;; esac
    bench_keys "$key" "=${2:-}" "ceil=${3:-}" "x_ceil=${4:-}" "pf=${5:-}" "x_pf=${6:-}" "x_pf_spread=${7:-}" "met=$met"
}
# pfcol KEY FIELD: Postfix's median (PFV), the median of the per-round
# tern/Postfix ratios (RP) and their spread (SP, "min-max").
pfcol() {
    PFV=$(v "pf.$1.$2")
    ratio_rounds "$1" "pf.$1" "$2"
    RP=$RS_MED SP=$RS_SPREAD
}
# A figure of load KEY compared with a ceiling and maybe Postfix.
#   cmp LABEL KEY FIELD CEILING [TARGET_CEIL_OP LIMIT] [PF_OP LIMIT]
cmp() {
    local label=$1 val rc tgt="" res=""
    val=$(v "$2.$3")
    rc=$(ratio "$val" "$4")
    pfcol "$2" "$3"
    if [ -n "${5:-}" ]; then tgt="$5 $6 x ceil"; res=$(verdict "$rc" "$5" "$6"); fi
    row "$label" "$val" "$4" "$rc" "$PFV" "$RP" "$SP" "$tgt" "$res"
    if [ -n "${7:-}" ] && [ $PF = 1 ]; then
        row "  ...against Postfix" " " "" "" "" "$RP" "$SP" "$7 $8 x pf" "$(verdict "$RP" "$7" "$8")"
    fi
}
# A figure of load KEY against Postfix only, in MiB when FIELD is rss.
pfrow() {
    local val
    val=$(v "$2.$3")
    pfcol "$2" "$3"
    if [ "$3" = rss ]; then val=$(calc "$val / 1024") PFV=$(calc "$PFV / 1024"); fi
    row "$1" "$val" "" "" "$PFV" "$RP" "$SP" "${4:-}" "${4:+$(verdict "$val" "$5" "$6")}"
}

s_first=$(echo "$SESSIONS" | awk '{ print $1 }')
lat_ceil=$(calc "$(v ceil.$s_first.p50) + $(v fsync.1.p50)" 3)
rss_busy_mib=$(calc "$(v accept.50.rss) / 1024")
loads="$(for s in $SESSIONS; do echo accept.$s; done) $(for s in $E2E_SESSIONS; do echo e2e.$s; done) $(for s in $LOCAL_SESSIONS; do echo local.$s; done)"

echo
echo "=== tern benchmark: $MESSAGES x $SIZE per load, $ROUNDS round(s), $(nproc 2>/dev/null) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC') ==="
echo "Rates in messages (files) per second; ratios against the ceilings of this same run. tern and postfix: the median"
echo "  of the rounds; tern/pf: the median of the per-round ratios, spread: their lowest and highest."
if [ $PF = 1 ]; then
    echo "tern/pf: tern's figure over Postfix's in the same round (for rates higher is better; for latency, memory and CPU lower is)."
    echo "Postfix memory: the peak of its processes' $([ "$PF_MEM" = pss ] && echo "PSS (shared pages split)" || echo "summed RSS (shared pages counted per process)"), sampled every 500 ms; tern's: VmHWM."
fi
printf "$FMT" "figure" "tern" "ceiling" "x ceil" "postfix" "tern/pf" "spread" "target" "result"
printf '%s\n' "----------------------------------------------------------------------------------------------------------------------"
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
        cmp "accept, 10 sess, msg/s" accept.10 rate "$(v ceil.10.rate)" ">=" 0.6 ">=" 1.5
    else
        cmp "accept, $s sess, msg/s" "accept.$s" rate "$(v ceil.$s.rate)"
    fi
done
for s in $SESSIONS; do
    row "accept $s sess / durable ceiling" "$(v accept.$s.rate)" "$(v dur.$s.rate)" "$(ratio "$(v accept.$s.rate)" "$(v dur.$s.rate)")"
done
for t in $FSYNC_THREADS; do
    [ "$t" = 1 ] && continue
    row "accept 10 sess / durability $t thr" "$(v accept.10.rate)" "$(v fsync.$t.rate)" "$(ratio "$(v accept.10.rate)" "$(v fsync.$t.rate)")"
done
cmp "latency p50, $s_first sess, ms" "accept.$s_first" p50 "$lat_ceil" "<=" 2
cmp "  from connect, p50, ms" "accept.$s_first" cp50 "$(calc "$(v ceil.$s_first.cp50) + $(v fsync.1.p50)" 3)"
pfrow "latency p99, $s_first sess, ms" "accept.$s_first" p99
for s in $E2E_SESSIONS; do
    if [ "$s" = 10 ]; then
        cmp "end to end, 10 sess, msg/s" e2e.10 rate "$(v ceil.10.rate)" ">=" 0.4 ">=" 1.5
    else
        cmp "end to end, $s sess, msg/s" "e2e.$s" rate "$(v ceil.$s.rate)"
    fi
done
for s in $E2E_SESSIONS; do
    row "end to end $s sess / relay ceiling" "$(v e2e.$s.rate)" "$(v relay.$s.rate)" "$(ratio "$(v e2e.$s.rate)" "$(v relay.$s.rate)")"
done
for s in $LOCAL_SESSIONS; do
    cmp "local delivery, $s sess, msg/s" "local.$s" rate "$(v ceil.$s.rate)"
done
sc=$(ratio "$(v accept.50.rate)" "$(v accept.10.rate)")
row "scaling: accept 50 / accept 10" "$sc" "" "" "" "" "" ">= 1" "$(verdict "$sc" ">=" 1)"
sc=$(ratio "$(v e2e.50.rate)" "$(v e2e.10.rate)")
[ -n "$sc" ] && row "scaling: end to end 50 / 10" "$sc" "" "" "" "" "" ">= 1" "$(verdict "$sc" ">=" 1)"
pfrow "RSS peak, 50 busy sessions, MiB" accept.50 rss "<= 64 MiB" "<=" 64
row "RSS per idle session, KiB" "$(v idle.per)" "" "" "" "" "" "<= 256 KiB" "$(verdict "$(v idle.per)" "<=" 256)"
row "RSS ternd, no session, MiB" "$(calc "$(v idle.base) / 1024")"
for k in $loads; do
    [ "$k" = accept.50 ] && continue
    [ -n "$(v $k.rss)" ] || continue
    pfrow "RSS peak, ${k/./ }, MiB" "$k" rss
done
for k in $loads; do
    [ -n "$(v $k.cpu)" ] || continue
    pfrow "CPU s / 1000 msgs, ${k/./ }" "$k" cpu
done
if [ -n "$(v queue.ratio)" ]; then
    row "queue scale: loaded/empty rate" "$(v queue.ratio)" "" "" "" "" "" ">= 0.8 (~1)" "$(verdict "$(v queue.ratio)" ">=" 0.8)"
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

# The neighbour table: each variant quiet and busy, then the ratios within rounds.
NBK=()    # BENCH line keys of the neighbour loads
if [ "$NEIGHBOUR" = 1 ]; then
    nbrates=()
    for k in "${!R[@]}"; do [[ $k == *.nbrate ]] && nbrates+=("${R[$k]}"); done
    read -r nbmed nbmin nbmax <<<"$(stats_of "${nbrates[@]}")"
    NFMT='%-30s %9s %9s %7s %-11s %8s %8s %8s %8s\n'
    echo
    echo "=== neighbour: acceptance, $NB_MESSAGES messages per load, $ROUNDS round(s), beside a process rewriting a $NB_SIZE file in"
    echo "    the spool's filesystem at $([ "$NB_RATE" = 0 ] && echo "full speed" || echo "$NB_RATE MiB/s") (reached: median $(calc "${nbmed:-0}" 0), $(calc "${nbmin:-0}" 0)-$(calc "${nbmax:-0}" 0) MiB/s), never syncing ==="
    echo "quiet: without the neighbour; busy: with it. busy/quiet: the median of the per-round ratios of the rates, and their spread."
    printf "$NFMT" "load" "quiet/s" "busy/s" "b/q" "spread" "p50 q" "p50 b" "p99 q" "p99 b"
    printf '%s\n' "--------------------------------------------------------------------------------------------------"
    for s in $NB_SESSIONS; do
        for w in $NB_VARIANTS; do
            ratio_rounds "nb.$w.1.$s" "nb.$w.0.$s" rate
            printf "$NFMT" "accept, $s sess, $([ "$w" = pf ] && echo postfix || echo "$w")" "$(v nb.$w.0.$s.rate)" "$(v nb.$w.1.$s.rate)" \
                "$RS_MED" "$RS_SPREAD" "$(v nb.$w.0.$s.p50)" "$(v nb.$w.1.$s.p50)" "$(v nb.$w.0.$s.p99)" "$(v nb.$w.1.$s.p99)"
            NBK+=("nb${s}_${w}_x_quiet=$RS_MED" "nb${s}_${w}_x_quiet_spread=$RS_SPREAD")
            bench_keys "nb${s}_${w}" "quiet=$(v nb.$w.0.$s.rate)" "busy=$(v nb.$w.1.$s.rate)" \
                "p50_quiet=$(v nb.$w.0.$s.p50)" "p50_busy=$(v nb.$w.1.$s.p50)" "p99_quiet=$(v nb.$w.0.$s.p99)" "p99_busy=$(v nb.$w.1.$s.p99)"
        done
    done
    # Ratios between variants in the same round, quiet and busy.
    #   nbratio LABEL A B FIELD S [TARGET_OP LIMIT]: the target applies to the busy ratio.
    RFMT='%-36s %7s %-11s %7s %-11s %-14s %s\n'
    nbratio() {
        local q qs b bs tgt="" res=""
        ratio_rounds "nb.$2.0.$5" "nb.$3.0.$5" "$4"
        q=$RS_MED qs=$RS_SPREAD
        ratio_rounds "nb.$2.1.$5" "nb.$3.1.$5" "$4"
        b=$RS_MED bs=$RS_SPREAD
        if [ -n "${6:-}" ]; then tgt="$6 $7 (busy)"; res=$(verdict "$b" "$6" "$7"); count_verdict "$res"; fi
        printf "$RFMT" "$1" "$q" "$qs" "$b" "$bs" "$tgt" "$res"
        NBRQ=$q NBRQS=$qs NBRB=$b NBRBS=$bs
    }
    echo
    echo "Ratios within each round (median, spread); targets of issue 21 for tern's default spool_sync ($DEFAULT_SYNC):"
    printf "$RFMT" "ratio" "quiet" "spread" "busy" "spread" "target" "result"
    printf '%s\n' "--------------------------------------------------------------------------------------------------"
    for s in $NB_SESSIONS; do
        nbratio "syncfs / fsync, $s sess, msg/s" syncfs fsync rate "$s"
        NBK+=("q${s}_syncfs_x_fsync=$NBRQ" "q${s}_syncfs_x_fsync_spread=$NBRQS" "nb${s}_syncfs_x_fsync=$NBRB" "nb${s}_syncfs_x_fsync_spread=$NBRBS")
        [ $PF = 1 ] || continue
        for w in fsync syncfs; do
            tgt=()
            if [ "$w" = "$DEFAULT_SYNC" ]; then
                case $s in 1) tgt=(">=" 1) ;; 10) tgt=(">=" 1.5) ;; esac
            fi
            nbratio "$w / postfix, $s sess, msg/s" "$w" pf rate "$s" "${tgt[@]}"
            NBK+=("q${s}_${w}_x_pf=$NBRQ" "q${s}_${w}_x_pf_spread=$NBRQS" "nb${s}_${w}_x_pf=$NBRB" "nb${s}_${w}_x_pf_spread=$NBRBS")
            tgt=()
            [ "$w" = "$DEFAULT_SYNC" ] && [ "$s" = 1 ] && tgt=("<=" 1)
            nbratio "$w / postfix, $s sess, p99" "$w" pf p99 "$s" "${tgt[@]}"
            NBK+=("q${s}_${w}_p99_x_pf=$NBRQ" "q${s}_${w}_p99_x_pf_spread=$NBRQS" "nb${s}_${w}_p99_x_pf=$NBRB" "nb${s}_${w}_p99_x_pf_spread=$NBRBS")
            nbratio "$w / postfix, $s sess, p50" "$w" pf p50 "$s"
            NBK+=("q${s}_${w}_p50_x_pf=$NBRQ" "q${s}_${w}_p50_x_pf_spread=$NBRQS" "nb${s}_${w}_p50_x_pf=$NBRB" "nb${s}_${w}_p50_x_pf_spread=$NBRBS")
        done
    done
fi
for out in "${SCRIPT_OUT[@]}"; do
    echo
    grep -v '^BENCH ' "$out"
    for kv in $(sed -n 's/^BENCH //p' "$out" | tail -1); do ROWK+=("$kv"); done
done
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (at the start: $LOAD0); on a busy machine every figure is noisy."
for n in "${NOTES[@]}"; do echo "note: $n"; done
# One machine-readable line, for notes and scripts. Ratios to Postfix are the
# medians of the per-round ratios; *_spread their lowest-highest.
pfcol accept.10 rate
a10pf=$RP a10pfs=$SP
pfcol e2e.10 rate
e10pf=$RP e10pfs=$SP
echo "BENCH messages=$MESSAGES size=$SIZE rounds=$ROUNDS accept10_x_ceil=$(ratio "$(v accept.10.rate)" "$(v ceil.10.rate)")" \
    "e2e10_x_ceil=$(ratio "$(v e2e.10.rate)" "$(v ceil.10.rate)") latency_x_ceil=$(ratio "$(v accept.$s_first.p50)" "$lat_ceil")" \
    "accept10_x_pf=$a10pf accept10_x_pf_spread=$a10pfs e2e10_x_pf=$e10pf e2e10_x_pf_spread=$e10pfs" \
    "durable10_x_ceil=$dur10 relay10_x_ceil=$relay10" \
    "accept10_x_durable=$(ratio "$(v accept.10.rate)" "$(v dur.10.rate)") e2e10_x_relay=$(ratio "$(v e2e.10.rate)" "$(v relay.10.rate)")" \
    "rss_busy_mib=$rss_busy_mib idle_kib=$(v idle.per) queue_ratio=$(v queue.ratio)" \
    "${NBK[@]}" "${ROWK[@]}" \
    "met=$MET not_met=$NOT_MET na=$NA broken=${#BROKEN[@]}"
if [ ${#BROKEN[@]} -gt 0 ]; then
    echo "BROKEN loads (exit 1):"
    for b in "${BROKEN[@]}"; do echo "  $b"; done
    exit 1
fi
exit 0
