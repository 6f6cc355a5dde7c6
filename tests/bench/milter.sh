#!/usr/bin/env bash
# Acceptance with one milter in the path against none (issue 19). A
# benchmark, not a test: it prints figures and fails only when a load broke
# (an error, a message not accepted). `make bench` runs it after bench.sh.
#
#   tests/bench/milter.sh            (after: cargo build --release --bins --examples)
#
# The milter is a private OpenDKIM (Debian's opendkim) signing every message
# (relaxed/relaxed, RSA-2048): the commonest milter and a real cost, since it
# hashes header and body and signs. Without opendkim, the python test milter
# (tests/integration/common/test_milter.py, python3-milter) that answers
# "continue" to everything is used instead; with neither, the script says so
# and exits 0. MILTER_KIND=opendkim|python picks one.
#
# smtp-source sends MILTER_MESSAGES (1000) messages of MILTER_SIZE (4K) from
# MILTER_SESSIONS (10) sessions, one message per connection (so every message
# costs a milter connection and negotiation too, as on an MX), to ternd with
# queue_only = yes and its default spool_sync (fsync before each 250).
# The two loads run in MILTER_ROUNDS (5) interleaved rounds (milter, none,
# milter, none, ...), each on a fresh ternd and an empty spool; the table
# gives each load's median rate with its lowest and highest round, and the
# median of the per-round ratios milter/none with their spread.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
MESSAGES=${MILTER_MESSAGES:-1000}
SIZE=${MILTER_SIZE:-4K}
SESSIONS=${MILTER_SESSIONS:-10}
# At least 3 rounds: one round is not a claim (make bench's BENCH_ROUNDS is 1
# without Postfix).
ROUNDS=${MILTER_ROUNDS:-$(( ${BENCH_ROUNDS:-5} > 3 ? ${BENCH_ROUNDS:-5} : 3 ))}
TIMEOUT=${MILTER_TIMEOUT:-300}
KIND=${MILTER_KIND:-}
TERN_USER=${BENCH_TERN_USER:-nobody}
PARENT=${BENCH_DIR:-$TARGET}
PY=/usr/bin/python3

for p in "$B/ternd" "$X/smtp-source"; do
    [ -x "$p" ] || { echo "milter: $p missing; run: cargo build --release --bins --examples" >&2; exit 2; }
done
if [ -z "$KIND" ]; then
    if command -v opendkim >/dev/null 2>&1 || [ -x /usr/sbin/opendkim ]; then
        KIND=opendkim
    elif [ -x "$PY" ] && "$PY" -c 'import Milter' 2>/dev/null; then
        KIND=python
    else
        echo "milter: SKIPPED: neither opendkim nor python3-milter is installed (apt-get install opendkim)"
        echo "BENCH milter_skipped=1"
        exit 0
    fi
fi

mkdir -p "$PARENT" || exit 2
D=$(mktemp -d "$(cd "$PARENT" && pwd)/milter.XXXXXX") || exit 2
chmod 755 "$D"
BROKE=0
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$D"
}
trap cleanup EXIT

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The milter, started once for all rounds; sets MILTER (an endpoint for tern).
start_milter() {
    local port m=$D/milter
    mkdir -p "$m"
    port=$(free_port)
    if [ "$KIND" = opendkim ]; then
        openssl genrsa -out "$m/key.pem" 2048 2>/dev/null || { echo "milter: openssl genrsa failed" >&2; return 1; }
        echo "bench._domainkey.example.test example.test:bench:$m/key.pem" >"$m/keytable"
        echo "*@example.test bench._domainkey.example.test" >"$m/signingtable"
        cat >"$m/opendkim.conf" <<EOF
Mode s
Socket inet:$port@127.0.0.1
PidFile $m/opendkim.pid
Canonicalization relaxed/relaxed
KeyTable file:$m/keytable
SigningTable refile:$m/signingtable
InternalHosts 127.0.0.1
RequireSafeKeys false
Syslog no
EOF
        "$(command -v opendkim || echo /usr/sbin/opendkim)" -f -x "$m/opendkim.conf" 2>"$m/milter.log" </dev/null &
    else
        TEST_MILTER_SPEC="" "$PY" -u "$TOP/tests/integration/common/test_milter.py" \
            --socket "inet:$port@127.0.0.1" --log /dev/null 2>"$m/milter.log" </dev/null &
    fi
    PIDS+=("$!")
    wait_for "answers $port" 20 || { echo "milter: $KIND did not start: $(tail -3 "$m/milter.log")" >&2; return 1; }
    MILTER=inet:127.0.0.1:$port
}

# start_tern NAME [MILTERS]: ternd accepting into D/NAME/spool; sets ADDR and PID.
start_tern() {
    mkdir -p "$D/$1"
    chmod 777 "$D/$1"
    ternd_start "$D/$1" hostname=bench.test relay_networks=127.0.0.0/8 dns_servers=127.0.0.1:9 \
        queue_only=yes "${TERN_LIMITS[@]}" ${2:+"milters=$2"} ||
        { echo "milter: ternd did not start" >&2; return 1; }
    PID=$TERND_PID ADDR=$TERND_ADDR
}



start_milter || exit 1
echo >&2 "milter: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); spool $(df -T "$D" | awk 'NR == 2 { print $2 " on " $1 }'); milter $KIND; $MESSAGES messages of $SIZE, $SESSIONS sessions, 1 per connection, $ROUNDS rounds"

declare -A R
checked=0
for ((r = 1; r <= ROUNDS; r++)); do
    for load in milter none; do
        name=$load-$r
        if [ "$load" = milter ]; then start_tern "$name" "$MILTER"; else start_tern "$name"; fi || { BROKE=1; continue; }
        rate=$(load_rate milter "$D/$name.src" "$MESSAGES" "$ADDR" -s "$SIZE" -w "$TIMEOUT" \
            -f bench@example.test -t alice@example.test)
        [ "$rate" = 0 ] && BROKE=1
        # Once: the milter really was in the path (OpenDKIM's signature, or
        # the python milter's connection in its log).
        if [ "$load" = milter ] && [ $checked = 0 ] && [ "$KIND" = opendkim ]; then
            f=$(find "$D/$name/spool/msg" -type f 2>/dev/null | head -1)
            if [ -n "$f" ] && grep -q '^DKIM-Signature:' "$f"; then checked=1; else
                echo "milter: no DKIM-Signature in the queued messages: the milter is not in the path" >&2
                BROKE=1
            fi
        fi
        kill "$PID"; wait "$PID" 2>/dev/null
        R[$load]+="$rate "
        rm -rf "${D:?}/$name"
        echo >&2 "  round $r $load: $rate msgs/s"
    done
done

echo
printf '%-8s %12s %16s\n' load "msgs/s med" "(min-max)"
for load in milter none; do
    v=${R[$load]:-}
    [ -z "$v" ] && continue
    printf '%-8s %12.1f %16s\n' "$load" "$(echo $v | tr ' ' '\n' | median)" "($(echo $v | tr ' ' '\n' | minmax))"
done
a=(${R[milter]:-}) b=(${R[none]:-}) out=""
for ((i = 0; i < ${#a[@]} && i < ${#b[@]}; i++)); do
    out+="$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { if (y > 0) printf "%.3f", x / y; else print 0 }') "
done
ratio=0 spread=0-0
if [ -n "$out" ]; then
    ratio=$(echo $out | tr ' ' '\n' | median)
    spread=$(echo $out | tr ' ' '\n' | minmax)
    printf 'milter/none per round: median %s (%s)\n' "$ratio" "$spread"
fi
# The last line (tests/bench/README.md, "Further scripts"): keys for bench.sh's
# BENCH line.
med() { echo ${R[$1]:-0} | tr ' ' '\n' | median; }
echo "BENCH milter_kind=$KIND milter_rate=$(med milter) milter_none_rate=$(med none) milter_x_none=$ratio milter_x_none_spread=$spread milter_broken=$BROKE"
exit $BROKE
