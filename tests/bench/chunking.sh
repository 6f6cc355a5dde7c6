#!/usr/bin/env bash
# Large messages, DATA against BDAT (RFC 3030), tern against Postfix (issue 21
# item 4). A benchmark, not a test: it prints figures and fails only when a
# load broke (an error, a message not accepted).
#
#   tests/bench/chunking.sh            (after: cargo build --release --bins --examples)
#
# For each size in CHUNK_SIZES (default 1M 10M) and each server (ternd with
# queue_only = yes, and a private Postfix in accept mode through postfix.sh
# when it can run: root and the postfix package), smtp-source sends
# CHUNK_MESSAGES_<size> messages from CHUNK_SESSIONS (10) sessions, one per
# connection, with PIPELINING, once by DATA and once by BDAT (-B). The four
# loads of a size run in interleaved rounds (tern DATA, tern BDAT, Postfix
# DATA, Postfix BDAT, then again), CHUNK_ROUNDS (3) of them, each on a fresh
# server and an empty spool; the table gives per load the median rate in
# messages/s and MB/s, with the lowest and highest round, and the median of
# the per-round ratios tern/Postfix and BDAT/DATA.
#
# Both servers store and fsync every message before their 250: tern with its
# default spool_sync, Postfix's cleanup with one fsync per file. Postfix's
# message_size_limit is raised to 100 MB (its default, 10240000, is below a
# 10 MiB message with headers); tern's max_message_size likewise.
# Postfix 3.7's smtpd offers CHUNKING; its SMTP client never sends BDAT.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
SIZES=${CHUNK_SIZES:-1M 10M}
SESSIONS=${CHUNK_SESSIONS:-10}
# Run by bench.sh (make bench), it takes that run's rounds and its Postfix
# setting (BENCH_POSTFIX=0: tern only).
ROUNDS=${CHUNK_ROUNDS:-${BENCH_ROUNDS:-3}}
TIMEOUT=${CHUNK_TIMEOUT:-600}
TERN_USER=${BENCH_TERN_USER:-nobody}
PARENT=${BENCH_DIR:-$TARGET}

for p in "$B/ternd" "$X/smtp-source"; do
    [ -x "$p" ] || { echo "chunking: $p missing; run: cargo build --release --bins --examples" >&2; exit 2; }
done
mkdir -p "$PARENT" || exit 2
D=$(mktemp -d "$(cd "$PARENT" && pwd)/chunking.XXXXXX") || exit 2
chmod 755 "$D"
BROKE=0
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for w in "$D"/pf-*; do [ -d "$w" ] && "$here/postfix.sh" stop "$w" >/dev/null 2>&1; done
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$D"
}
trap cleanup EXIT

messages_for() {
    case $1 in
        1M) echo "${CHUNK_MESSAGES_1M:-200}" ;;
        10M) echo "${CHUNK_MESSAGES_10M:-30}" ;;
        *) echo "${CHUNK_MESSAGES:-50}" ;;
    esac
}

bytes_of() {
    case $1 in
        *K) echo $(( ${1%K} * 1024 )) ;;
        *M) echo $(( ${1%M} * 1024 * 1024 )) ;;
        *) echo "$1" ;;
    esac
}

# start_tern NAME: ternd accepting into D/NAME/spool; sets ADDR and PID.
start_tern() {
    ternd_start "$D/$1" hostname=bench.test relay_networks=127.0.0.0/8 dns_servers=127.0.0.1:9 \
        queue_only=yes max_message_size=100M "${TERN_LIMITS[@]}" ||
        { echo "ternd did not start" >&2; return 1; }
    PID=$TERND_PID ADDR=$TERND_ADDR
}

start_postfix() {
    local w=$D/pf-$1 port
    port=$(free_port)
    POSTFIX_MAIN_EXTRA="message_size_limit = 104857600" \
        "$here/postfix.sh" start "$w" accept "$port" >/dev/null || return 1
    ADDR=127.0.0.1:$port
}



have_postfix=0
if [ "${BENCH_POSTFIX:-1}" != 0 ] && "$here/postfix.sh" available >/dev/null 2>&1; then have_postfix=1; fi
echo "chunking: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); spool $(df -T "$D" | awk 'NR == 2 { print $2 " on " $1 }'); $SESSIONS sessions, $ROUNDS rounds; postfix: $([ $have_postfix = 1 ] && echo yes || echo 'no (skipped)')"

declare -A R
for size in $SIZES; do
    n=$(messages_for "$size")
    for ((r = 1; r <= ROUNDS; r++)); do
        for server in tern postfix; do
            [ "$server" = postfix ] && [ $have_postfix = 0 ] && continue
            for mode in data bdat; do
                flags=""; [ "$mode" = bdat ] && flags=-B
                name="$size-$server-$mode-$r"
                if [ "$server" = tern ]; then
                    start_tern "$name" || { BROKE=1; continue; }
                    rate=$(load_rate chunking "$D/$name.src" "$n" "$ADDR" $flags -s "$size" -w "$TIMEOUT" -t alice@example.test)
                    kill "$PID"; wait "$PID" 2>/dev/null
                else
                    start_postfix "$name" || { echo "chunking: postfix did not start" >&2; BROKE=1; continue; }
                    rate=$(load_rate chunking "$D/$name.src" "$n" "$ADDR" $flags -s "$size" -w "$TIMEOUT" -t alice@example.test)
                    "$here/postfix.sh" stop "$D/pf-$name" >/dev/null 2>&1
                fi
                [ "$rate" = 0 ] && BROKE=1
                R[$size.$server.$mode]+="$rate "
                rm -rf "${D:?}/$name" "${D:?}/pf-$name"
                echo "chunking: round $r $size $server $mode: $rate msgs/s" >&2
            done
        done
    done
done

# The last line: `BENCH key=value...`, a key for every row (bench.sh adds them
# to its own BENCH line): chunk_1m_tern_data=msgs/s (median) and _spread,
# chunk_1m_tern_bdat_x_data (median of the per-round ratios) and _spread, ...
KEYS="chunk_sessions=$SESSIONS chunk_rounds=$ROUNDS"
echo
echo "=== chunking: DATA against BDAT, $SESSIONS sessions, one message per connection, $ROUNDS round(s); the median of the rounds"
echo "    (lowest-highest); ratios: the median of the per-round ratios (lowest-highest) ==="
printf '%-6s %-8s %-5s %12s %16s %10s\n' size server mode "msgs/s med" "(min-max)" "MB/s med"
for size in $SIZES; do
    mb=$(bytes_of "$size")
    for server in tern postfix; do
        for mode in data bdat; do
            v=${R[$size.$server.$mode]:-}
            [ -z "$v" ] && continue
            med=$(echo $v | tr ' ' '\n' | median)
            spread=$(echo $v | tr ' ' '\n' | minmax)
            printf '%-6s %-8s %-5s %12.2f %16s %10.1f\n' "$size" "$server" "$mode" "$med" \
                "($spread)" "$(awk -v m="$med" -v b="$mb" 'BEGIN { print m * b / 1048576 }')"
            k=chunk_$(echo "$size" | tr 'A-Z' 'a-z')_${server}_$mode
            KEYS+=" $k=$med ${k}_spread=$spread"
        done
    done
    # Per-round ratios: round i of one load against round i of the other.
    ratio() {
        local a=(${R[$1]:-}) b=(${R[$2]:-}) i out=""
        for ((i = 0; i < ${#a[@]} && i < ${#b[@]}; i++)); do
            out+="$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { if (y > 0) printf "%.3f", x / y; else print 0 }') "
        done
        [ -n "$out" ] || return 0
        local med spread
        med=$(echo $out | tr ' ' '\n' | median) spread=$(echo $out | tr ' ' '\n' | minmax)
        printf '  %-28s median %s (%s)\n' "$3" "$med" "$spread"
        KEYS+=" $4=$med $4_spread=$spread"
    }
    z=chunk_$(echo "$size" | tr 'A-Z' 'a-z')
    ratio "$size.tern.bdat" "$size.tern.data" "$size tern BDAT/DATA" "${z}_tern_bdat_x_data"
    ratio "$size.postfix.bdat" "$size.postfix.data" "$size postfix BDAT/DATA" "${z}_pf_bdat_x_data"
    ratio "$size.tern.data" "$size.postfix.data" "$size DATA tern/postfix" "${z}_data_x_pf"
    ratio "$size.tern.bdat" "$size.postfix.bdat" "$size BDAT tern/postfix" "${z}_bdat_x_pf"
done
[ $have_postfix = 1 ] || echo "chunking: no Postfix (BENCH_POSTFIX=0, not root, or no postfix package): tern only"
echo "BENCH $KEYS chunk_broken=$BROKE"
exit $BROKE
