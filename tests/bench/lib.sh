# Shell helpers shared by the bench scripts (bench.sh, chunking.sh, milter.sh,
# auth.sh): sourced, not run.

# The checkout (TOP); cargo's target directory (TARGET: CARGO_TARGET_DIR or
# TARGET_DIR, relative to TOP, else TOP/target); the release binaries (B:
# BENCH_BIN, as bench.sh hands it to the scripts it runs, else
# TARGET/release) and the bench programs among them (X).
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-${TARGET_DIR:-$TOP/target}}
case $TARGET in /*) ;; *) TARGET=$TOP/$TARGET ;; esac
B=${BENCH_BIN:-$TARGET/release}
X=$B/examples

# wait_for COND SECS [STEP]: until `eval COND` succeeds, for at most SECS
# seconds, polling every STEP (0.01 s); fails on time-out.
wait_for() {
    local end=$((SECONDS + $2))
    until eval "$1"; do
        [ "$SECONDS" -gt "$end" ] && return 1
        sleep "${3:-0.01}"
    done
}

# The median of the numbers on standard input, one a line (0 when none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The lowest and highest of the numbers on standard input, as LO-HI.
minmax() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }

# A loopback TCP port free right now (the kernel's pick).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The session limits of every ternd a bench script starts, as Postfix's 200
# processes and no anvil limits. smtp-source sends one message per connection:
# a client that has its 221 reconnects a moment before its old session's slot
# is free, so up to twice as many sessions as clients can be counted, and over
# 3/4 of max_sessions is stress mode, one session per address (a 421 to the
# rest). 200 keeps 50 clients well clear of it.
TERN_LIMITS=(max_sessions=200 max_sessions_per_ip=200)

# ternd_start DIR KEY=VALUE...: a release ternd ($B/ternd) in the foreground
# on a free loopback port, its spool in DIR/spool, its log in DIR/ternd.log,
# and these keys; its pid joins PIDS. Sets TERND_PID and TERND_ADDR
# (HOST:PORT); fails when it is not listening within 20 s.
ternd_start() {
    local dir=$1 kv
    shift
    mkdir -p "$dir"
    {
        echo "listen = 127.0.0.1:0"
        echo "spool = $dir/spool"
        # Started as root, ternd always drops to its user (default tern, which a
        # fresh machine lacks): name an account that exists everywhere.
        [ "$(id -u)" = 0 ] && echo "user = $TERN_USER"
        for kv in "$@"; do echo "${kv%%=*} = ${kv#*=}"; done
    } >"$dir/tern.conf"
    "$B/ternd" -d -f "$dir/tern.conf" 2>"$dir/ternd.log" </dev/null &
    TERND_PID=$!
    PIDS+=("$TERND_PID")
    wait_for "grep -qs 'listening on' '$dir/ternd.log'" 20 || return 1
    TERND_ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$dir/ternd.log" | head -1)
}

# load_rate WHO OUT MESSAGES ADDR SMTP-SOURCE-ARGS...: one smtp-source load of
# MESSAGES to ADDR ($X/smtp-source, PIPELINING, one message per connection),
# its output in OUT and OUT.err; prints its msgs/s, or 0 and a line on stderr
# starting with WHO when it broke (a non-zero exit, or fewer messages
# accepted). It runs in $(...), where no variable of the caller can be set:
# the caller counts a 0 as broken.
load_rate() {
    local who=$1 out=$2 n=$3 addr=$4 rc ok
    shift 4
    "$X/smtp-source" -P -c "$SESSIONS" -m "$n" -r 1 "$@" "$addr" >"$out" 2>"$out.err" </dev/null
    rc=$?
    ok=$(sed -n 's/^RESULT.* messages=\([0-9]*\).*/\1/p' "$out")
    if [ $rc -ne 0 ] || [ "$ok" != "$n" ]; then
        echo "$who: $(basename "$out") broke: exit $rc, ${ok:-0} of $n accepted: $(head -3 "$out.err" | tr '\n' ' ')" >&2
        echo 0
        return
    fi
    sed -n 's/^RESULT.* msgs_per_sec=\([0-9.]*\).*/\1/p' "$out"
}
