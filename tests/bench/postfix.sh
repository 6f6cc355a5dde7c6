#!/usr/bin/env bash
# A private Postfix instance for issue 9's side-by-side benchmark, driven by
# tests/bench/bench.sh (`make bench-postfix`). A benchmark helper, not a test.
#
#   postfix.sh install                          apt-get install postfix (root), system instance off
#   postfix.sh available                        exit 0 if a private instance can be started
#   postfix.sh start WORKDIR MODE PORT [SINKPORT]
#                                               MODE: accept | relay | local; prints pid=…
#                                               (and maildir=… in local mode) once PORT answers 220
#   postfix.sh stats WORKDIR                    "rss_kb=N cpu_seconds=X" of the whole instance
#   postfix.sh pss WORKDIR                      "pss_kb=N": its memory, shared pages split
#   postfix.sh stop WORKDIR                     stop it and wait for every process to exit
#   postfix.sh queue-empty WORKDIR              exit 0 when nothing is queued any more
#
# Everything of an instance lives under WORKDIR: etc/ (main.cf, master.cf),
# queue/ (queue_directory), data/ (data_directory), mail/ (Maildirs, local
# mode) and maillog (but see make_reachable for a WORKDIR out of reach of
# the unprivileged daemons). `start` discards those from an earlier run in the same
# WORKDIR, so queued mail of one load never leaks into the next; it touches
# nothing else there. Several instances with different WORKDIRs and ports can
# run at once. Only the Debian package's programs and the `postfix` account and
# `postdrop` group it creates are shared with the system; its /etc/postfix is
# read for nothing but postfix-files (the list `postfix start` checks).
#
# Configured like the tern instance it is compared with (see each mode below).
# Where the two cannot be identical:
# - Durability: Postfix's cleanup fsyncs the queue file before its 250, like
#   tern, but not the queue directory after the rename that makes the file
#   visible (strace -f -c on an accept load: exactly one fsync per message);
#   tern fsyncs the directory too. So Postfix does a little less durable work
#   per message, never more.
# - Postfix is one process per role (smtpd per session, cleanup, qmgr, smtp,
#   virtual…) talking over UNIX sockets; stats sums all of them.
# - Postfix's smtpd asks anvil and trivial-rewrite over local sockets, and
#   every daemon logs through postlogd into WORKDIR/maillog (no syslog is
#   assumed on a bench machine); ternd logs to its stderr, also a file.
# - Delivery parallelism keeps each side's defaults, which agree: 20
#   connections per destination (Postfix default_destination_concurrency_limit,
#   tern max_connections_per_domain).
#
# POSTFIX_MAIN_EXTRA (environment): main.cf lines added after the mode's own.
#
# Written against Debian 12's postfix 3.7; needs bash and coreutils, nothing else.
set -euo pipefail
# What we create must be readable by Postfix's unprivileged daemons, whatever
# umask the caller runs with.
umask 022

prog=${0##*/}
die() { echo "$prog: $*" >&2; exit 1; }

# Debian's layout; `postconf -d` would find them too but costs a process start.
POSTFIX=${POSTFIX:-/usr/sbin/postfix}
POSTCONF=${POSTCONF:-/usr/sbin/postconf}
# See make_reachable.
SIDE_PREFIX=/tmp/tern-postfix-bench

usage() {
    echo "usage:" >&2
    sed -n '5,13s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# The daemons' directory, from the package's compiled-in default.
daemon_dir() { "$POSTCONF" -dh daemon_directory; }

have_postfix() {
    [ -x "$POSTFIX" ] && [ -x "$POSTCONF" ] || return 1
    [ -x "$(daemon_dir)/master" ] || return 1
    # The package creates both; master refuses to start without them.
    getent passwd postfix >/dev/null && getent group postdrop >/dev/null
}

cmd_available() {
    is_root || { echo "$prog: not root: cannot run a private Postfix" >&2; return 1; }
    have_postfix || { echo "$prog: postfix is not installed" >&2; return 1; }
}

# The system instance (default config directory) is running.
system_running() { "$POSTFIX" status >/dev/null 2>&1; }

cmd_install() {
    if have_postfix; then
        # Someone else's Postfix: leave it as it is; we never use port 25.
        if system_running; then
            echo "$prog: note: the system Postfix is running; it may disturb the figures" >&2
        fi
        return 0
    fi
    is_root || { echo "$prog: postfix is not installed and we are not root" >&2; return 1; }
    command -v apt-get >/dev/null || { echo "$prog: no apt-get: install postfix by hand" >&2; return 1; }

    # "No configuration": the package then writes no /etc/postfix/main.cf, so
    # its init script (and systemd unit) has nothing to start; the private
    # instances bring their own main.cf.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

    # policy-rc.d exit 101 forbids maintainer scripts to start services
    # (invoke-rc.d honours it with or without systemd). Use one only for the
    # install, and only if the machine has none (Docker images often do).
    local policy=/usr/sbin/policy-rc.d ours=
    if [ ! -e "$policy" ]; then
        # shellcheck disable=SC2064 # $policy is fixed now
        trap "rm -f '$policy'" EXIT
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        ours=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >&2 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >&2; } ||
        rc=$?
    [ -z "$ours" ] || rm -f "$policy"
    [ "$rc" -eq 0 ] || { echo "$prog: apt-get install postfix failed" >&2; return 1; }

    # Keep the system instance stopped and off at boot, with or without
    # systemd as PID 1 (containers usually have none).
    if system_running; then "$POSTFIX" stop >&2 || true; fi
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl disable --now postfix >&2 || true
    elif command -v update-rc.d >/dev/null; then
        update-rc.d postfix disable >/dev/null 2>&1 || true
    fi
    have_postfix || { echo "$prog: postfix still not usable after install" >&2; return 1; }
}

# ---------------------------------------------------------------- instances

workdir_arg() {
    [ -n "${1:-}" ] || usage
    # Absolute: Postfix wants absolute directories in main.cf.
    case $1 in /*) printf '%s\n' "${1%/}" ;; *) printf '%s\n' "$PWD/${1%/}" ;; esac
}

# The master's pid, if that instance runs (its pid file, checked against /proc).
master_pid() {
    local w=$1 pid
    [ -r "$w/queue/pid/master.pid" ] || return 1
    read -r pid < "$w/queue/pid/master.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
    # Still a Postfix master, not a reused pid.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = master ] || return 1
    printf '%s\n' "$pid"
}

# The master and its children: every Postfix process of an instance is
# spawned by its master directly. The kernel lists a thread's children in
# /proc (CONFIG_PROC_CHILDREN, on in Debian's kernels), one read where
# scanning every process costs tens of milliseconds, which matters when the
# driver samples stats every half second during a load.
instance_pids() {
    local master=$1 children=/proc/$1/task/$1/children stat p line f
    local -a kids=()
    printf '%s\n' "$master"
    if [ -r "$children" ]; then
        # One line without a newline at its end, hence the || true.
        { read -r -a kids < "$children"; } 2>/dev/null || true
        if [ "${#kids[@]}" -gt 0 ]; then printf '%s\n' "${kids[@]}"; fi
        return 0
    fi
    for stat in /proc/[0-9]*/stat; do
        p=${stat#/proc/}; p=${p%/stat}
        { read -r line < "$stat"; } 2>/dev/null || continue
        # The fields after "(comm) ", which may hold spaces: state, ppid…
        read -r -a f <<< "${line##*) }"
        if [ "${f[1]:-}" = "$master" ]; then printf '%s\n' "$p"; fi
    done
}

cmd_stats() {
    local w master
    w=$(workdir_arg "${1:-}")
    master=$(master_pid "$w") || die "no Postfix instance running in $w"
    # One awk for every process: this runs every half second during a load,
    # so it should cost little. A process may exit between the listing and
    # its reading (getline then fails, and it is skipped; the master's
    # cutime/cstime hold its CPU time from then on).
    # stat: utime stime cutime cstime are fields 14-17, 12-15 after "(comm) ",
    # which may hold spaces. The master's cutime/cstime hold every child it
    # has reaped, so processes gone since the last call are not lost.
    # statm: the second field is VmRSS in pages.
    awk -v pids="$(instance_pids "$master"; reader_pid "$w" || true)" -v tck="$(getconf CLK_TCK)" \
        -v pagekb="$(($(getconf PAGESIZE) / 1024))" 'BEGIN {
        n = split(pids, pid, "\n")
        for (i = 1; i <= n; i++) {
            f = "/proc/" pid[i] "/stat"
            if ((getline line < f) > 0) {
                sub(/^.*\) /, "", line)
                split(line, a, " ")
                ticks += a[12] + a[13] + a[14] + a[15]
            }
            close(f)
            f = "/proc/" pid[i] "/statm"
            if ((getline line < f) > 0) {
                split(line, a, " ")
                rss += a[2] * pagekb
            }
            close(f)
        }
        printf "rss_kb=%d cpu_seconds=%.2f\n", rss, ticks / tck
    }'
}

# Not part of the shared interface, an addition: the sum of VmRSS counts
# the pages every Postfix process shares (libraries, the master's heap after
# fork) once per process, some 8x the real use with 50 smtpd processes.
# Proportional set size divides each shared page among its users, so the sum
# is what the instance really holds; ternd's is about its RSS, one process.
cmd_pss() {
    local w master
    w=$(workdir_arg "${1:-}")
    master=$(master_pid "$w") || die "no Postfix instance running in $w"
    awk -v pids="$(instance_pids "$master"; reader_pid "$w" || true)" 'BEGIN {
        n = split(pids, pid, "\n")
        for (i = 1; i <= n; i++) {
            f = "/proc/" pid[i] "/smaps_rollup"
            while ((getline line < f) > 0) {
                if (line ~ /^Pss:/) { split(line, a, " "); pss += a[2]; break }
            }
            close(f)
        }
        printf "pss_kb=%d\n", pss
    }'
}

# Wait until 127.0.0.1:PORT answers with a 220 greeting (bash's /dev/tcp).
wait_greeting() {
    local port=$1 tries=$2 line
    while [ "$tries" -gt 0 ]; do
        # Braces: the 2>/dev/null covers the failed connect but outlives
        # neither it nor the descriptor.
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            line=
            read -r -t 5 line <&3 || true
            printf 'QUIT\r\n' >&3 2>/dev/null || true
            exec 3>&- 3<&-
            case $line in 220*) return 0 ;; esac
        fi
        tries=$((tries - 1))
        sleep 0.1
    done
    return 1
}

cmd_stop() {
    local w master pids p i alive
    w=$(workdir_arg "${1:-}")
    stop_reader "$w"
    master=$(master_pid "$w") || { remove_side "$w"; return 0; }
    pids=$(instance_pids "$master")
    # "postfix stop" asks master to terminate (SIGTERM), which takes its
    # children with it; then wait until every one of them has exited.
    "$POSTFIX" -c "$w/etc" stop >/dev/null 2>&1 || kill -TERM "$master" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive=
        for p in $pids; do [ -e "/proc/$p" ] && alive=1; done
        [ -z "$alive" ] && { remove_side "$w"; return 0; }
        sleep 0.05
    done
    # Ten seconds on: a daemon stuck in I/O. Not worth more patience here.
    echo "$prog: Postfix in $w did not stop in 10 s; killing it" >&2
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    for ((i = 0; i < 100; i++)); do
        alive=
        for p in $pids; do [ -e "/proc/$p" ] && alive=1; done
        [ -z "$alive" ] && { remove_side "$w"; return 0; }
        sleep 0.05
    done
    die "Postfix processes in $w survive SIGKILL: $pids"
}

cmd_queue_empty() {
    local w d
    w=$(workdir_arg "${1:-}")
    [ -d "$w/queue" ] || die "no Postfix queue in $w"
    # deferred/ is hashed into subdirectories, hence find; a message being
    # received already has its file in incoming/.
    for d in incoming active deferred maildrop; do
        [ -d "$w/queue/$d" ] || continue
        if [ -n "$(find "$w/queue/$d" -type f -print -quit)" ]; then return 1; fi
    done
    return 0
}

cmd_start() {
    local w mode port sink pid
    w=$(workdir_arg "${1:-}")
    mode=${2:-}; port=${3:-}; sink=${4:-}
    case $mode in
        accept | local) ;;
        relay) [[ $sink =~ ^[0-9]+$ ]] || die "relay mode needs SINKPORT" ;;
        *) usage ;;
    esac
    [[ $port =~ ^[0-9]+$ ]] || usage
    cmd_available || exit 1

    # A previous instance in this WORKDIR goes first, with its queue.
    cmd_stop "$w"
    # Postfix's master binds with SO_REUSEPORT, so a port another root
    # process (another instance) listens on does not make it fail: the two
    # would share the connections. Refuse a port that answers; "in use" is
    # what the driver looks for to try another.
    if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
        exec 3>&- 3<&-
        die "127.0.0.1:$port is already in use"
    fi
    remove_side "$w"
    rm -rf "${w:?}/etc" "$w/queue" "$w/data" "$w/mail" "$w/maillog"
    mkdir -p "$w/etc" "$w/queue"
    # Where the unprivileged daemons write: data/, mail/ and maillog.
    local pub=$w
    if ! make_reachable "$w"; then
        pub=$(mktemp -d "$SIDE_PREFIX.XXXXXX")
        chmod 755 "$pub"
        ln -s "$pub/data" "$w/data"
        ln -s "$pub/mail" "$w/mail"
        ln -s "$pub/maillog" "$w/maillog"
    fi
    mkdir -p "$pub/data" "$pub/mail"
    # queue_directory and data_directory: root-owned and not group or world
    # writable above the postfix-owned subdirectories, as `postfix check`
    # wants; it creates the subdirectories (post-install create-missing).
    chown root:root "$w/queue"
    chmod 755 "$w/queue"
    chown postfix:root "$pub/data"
    chmod 700 "$pub/data"

    write_main_cf "$w" "$mode" "$sink" "$pub"
    write_master_cf "$w" "$mode" "$port"
    if [ "$mode" = local ]; then make_maildir "$pub"; fi

    # -c selects this config directory; as root no alternate_config_directories
    # entry in the default main.cf is needed (that list guards the set-gid
    # postdrop/postqueue). start runs `postfix check` first, which creates the
    # queue subdirectories with the right owners.
    # Its complaints go to stderr only on a terminal, else to the maillog.
    if ! "$POSTFIX" -c "$w/etc" start >/dev/null 2>&1; then
        # The first complaint says why (such as "bind 127.0.0.1 port N:
        # Address already in use", which the driver looks for to try another
        # port), the rest are consequences.
        local why
        why=$(grep -m 1 -e fatal: -e error: "$w/maillog" 2>/dev/null) || why="see $w/maillog"
        # A master that failed may still be exiting.
        cmd_stop "$w"
        die "postfix start failed: ${why#* postfix/}"
    fi
    if [ "$mode" = accept ]; then start_qmgr_stand_in "$w" || { cmd_stop "$w"; die "no stand-in for qmgr"; }; fi
    # The master writes its pid file once it runs; the port answers a little later.
    wait_greeting "$port" 300 || { cmd_stop "$w"; die "127.0.0.1:$port does not answer 220"; }
    pid=$(master_pid "$w") || die "no master pid in $w/queue/pid/master.pid"
    echo "pid=$pid"
    if [ "$mode" = local ]; then echo "maildir=$w/mail/bench/Maildir/new"; fi
}

write_main_cf() {
    local w=$1 mode=$2 sink=$3 pub=$4
    {
        cat <<EOF
# Private benchmark instance written by tests/bench/postfix.sh ($mode mode).
# Everything not set here is Postfix's default.
compatibility_level = 3.6
queue_directory = $w/queue
data_directory = $pub/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.invalid
mydomain = invalid
myorigin = \$myhostname
# Only 127.0.0.1: the address in master.cf says so too.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# Logging without syslog: one file through postlogd (a postlog service in master.cf).
maillog_file = $pub/maillog
maillog_file_prefixes = $pub

# Open for 127.0.0.1, no HELO or DNS checks (tern's bench config checks nothing
# either): relaying is allowed to mynetworks only, which is all that connects.
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_recipient_restrictions =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_delay_reject = yes
smtpd_helo_required = no
# No reverse DNS lookup of the client.
smtpd_peername_lookup = no
# 50 sessions from one address: no anvil limits (tern: max_sessions_per_ip raised).
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
# No TLS either way, no SASL.
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_sasl_auth_enable = no
# Enough processes for 50 sessions plus the delivery agents (default 100).
default_process_limit = 200
# Nothing local but what the mode below sets.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
biff = no
append_dot_mydomain = no
# No DNS anywhere: next hops are IP literals, lookups go through the resolver
# library (files) only.
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
EOF
        case $mode in
            accept)
                cat <<'EOF'

# accept: like tern's queue_only = yes. There is no qmgr in master.cf, so each
# message stays in queue/incoming/ as cleanup fsync'd it and nothing delivers.
# in_flow_delay makes cleanup wait for the qmgr's flow-control tokens, which
# never come without a qmgr: off.
in_flow_delay = 0
EOF
                ;;
            relay)
                cat <<EOF

# relay: everything to the sink (tern: route/relay_host to [127.0.0.1]:PORT).
# Brackets: no MX lookup. The connection cache stays at its default (on demand).
relayhost = [127.0.0.1]:$sink
default_transport = smtp
EOF
                ;;
            local)
                cat <<EOF

# local: every recipient @localhost into one Maildir, WORKDIR/mail/bench/Maildir/
# (the one "start" prints), through virtual(8): no system account, no aliases
# or .forward, like tern's mailbox = DIR/%u/ with a users list. virtual(8)
# refuses regexp substitutions, so one static map for all local parts: cheaper
# than tern's users lookup if anything. The mail belongs to nobody, since
# virtual(8) refuses uids below virtual_minimum_uid (100, and never 0); tern's
# bench delivers as the user it runs as.
virtual_mailbox_domains = localhost
virtual_mailbox_base = $pub/mail
# Trailing slash: Maildir format.
virtual_mailbox_maps = static:bench/Maildir/
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
virtual_transport = virtual
EOF
                ;;
        esac
        # Extra main.cf lines from the caller (chunking.sh raises
        # message_size_limit for its 10 MiB load); written last, they win.
        if [ -n "${POSTFIX_MAIN_EXTRA:-}" ]; then
            printf '\n# From POSTFIX_MAIN_EXTRA.\n%s\n' "$POSTFIX_MAIN_EXTRA"
        fi
    } > "$w/etc/main.cf"
}

write_master_cf() {
    local w=$1 mode=$2 port=$3
    {
        cat <<EOF
# Private benchmark instance ($mode mode): only the services this mode uses.
# No chroot (column 5 "n"), unlike Debian's packaged master.cf: nothing to copy
# into the queue directory, and tern runs unconfined too.
# service       type  private unpriv chroot wakeup maxproc command
127.0.0.1:$port inet  n       -      n      -      -       smtpd
cleanup         unix  n       -      n      -      0       cleanup
rewrite         unix  -       -      n      -      -       trivial-rewrite
anvil           unix  -       -      n      -      1       anvil
bounce          unix  -       -      n      -      0       bounce
defer           unix  -       -      n      -      0       bounce
trace           unix  -       -      n      -      0       bounce
postlog         unix-dgram n  -      n      -      1       postlogd
EOF
        if [ "$mode" != accept ]; then
            cat <<'EOF'
qmgr            unix  n       -      n      300    1       qmgr
scache          unix  -       -      n      -      1       scache
flush           unix  n       -      n      1000?  0       flush
error           unix  -       -      n      -      -       error
retry           unix  -       -      n      -      -       error
discard         unix  -       -      n      -      -       discard
EOF
        fi
        case $mode in
            relay)
                printf '%s\n' \
                    'smtp            unix  -       -      n      -      -       smtp' \
                    'relay           unix  -       -      n      -      -       smtp'
                ;;
            local)
                printf '%s\n' \
                    'virtual         unix  -       n      n      -      -       virtual'
                ;;
        esac
    } > "$w/etc/master.cf"
}

# Accept mode has no qmgr (it would deliver), but cleanup still tells the
# queue manager of every message it queues, as it would for real: it writes
# one byte to public/qmgr, a FIFO or a UNIX socket, and without one it logs
# "warning: unable to look up public/qmgr" per message (a log line, a stat
# and a syslog round trip that a real Postfix never pays). So the FIFO is
# there, owned by postfix like the master's own, with a reader that discards
# what arrives: exactly the trigger a real qmgr gets, without the delivery.
# The reader keeps the FIFO open for writing as well (`<>`), so that it never
# sees end of file between two writers. Its pid is in WORKDIR/qmgr-reader.pid;
# stats and pss count it with the instance, stop ends it.
start_qmgr_stand_in() {
    local w=$1 fifo=$1/queue/public/qmgr pid
    [ -d "$w/queue/public" ] || return 1
    rm -f "$fifo"
    mkfifo -m 622 "$fifo" && chown postfix "$fifo" || return 1
    # No terminal, no inherited output: the caller reads our stdout to its end.
    cat <>"$fifo" >/dev/null 2>&1 &
    pid=$!
    disown "$pid" 2>/dev/null || true
    echo "$pid" > "$w/qmgr-reader.pid"
}

# The stand-in's pid, if it runs.
reader_pid() {
    local w=$1 pid comm=
    [ -r "$w/qmgr-reader.pid" ] || return 1
    read -r pid < "$w/qmgr-reader.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # Still our cat, not a reused pid (no fork: stats runs every half second).
    { read -r comm < "/proc/$pid/comm"; } 2>/dev/null || return 1
    [ "$comm" = cat ] || return 1
    printf '%s\n' "$pid"
}

stop_reader() {
    local w=$1 pid
    if pid=$(reader_pid "$w"); then kill "$pid" 2>/dev/null || true; fi
    rm -f "$w/qmgr-reader.pid"
}

# The recipient's Maildir exists before the first message, so the driver can
# count new/ from the start; owned like the mail virtual(8) will write.
make_maildir() {
    local pub=$1 d
    d=$pub/mail/bench/Maildir
    mkdir -p "$d/tmp" "$d/new" "$d/cur"
    chown -R nobody:nogroup "$pub/mail"
}

# Postfix's daemons open data_directory (the postfix account), the maillog
# (postlogd) and the Maildir (virtual(8) as nobody) by absolute path, so
# WORKDIR and every directory above it must be searchable by others. Private
# temporary directories (mktemp -d makes them 0700) below a sticky
# world-writable one such as /tmp get o+x, which lets them through without
# letting them list anything. Any other closed directory on the way (a clone
# in /root, say) is not ours to open: then data/, mail/ and maillog live in a
# directory of their own under /tmp (SIDE_PREFIX.XXXXXX), WORKDIR holds
# symbolic links to them, and stop removes it.
make_reachable() {
    local path=$1 d=/ part mode in_tmp=
    local -a parts
    IFS=/ read -r -a parts <<< "${path#/}"
    for part in "${parts[@]}"; do
        [ -n "$part" ] || continue
        d=${d%/}/$part
        mode=$((8#$(stat -c %a "$d")))
        if ((mode & 1)); then
            :
        elif [ -n "$in_tmp" ]; then
            chmod o+x "$d"
        else
            return 1
        fi
        # Sticky and world-writable: a /tmp; what is below is someone's scratch.
        if (((mode & 8#1002) == 8#1002)); then in_tmp=1; fi
    done
}

# The directory under /tmp of an instance whose WORKDIR is out of reach, if
# any: only one we made (the data link points into it).
remove_side() {
    local w=$1 t
    [ -L "$w/data" ] || return 0
    t=$(readlink "$w/data")
    case $t in "$SIDE_PREFIX".*/data) rm -rf "${t%/data}" ;; esac
}

case ${1:-} in
    install) cmd_install ;;
    available) cmd_available ;;
    start) shift; cmd_start "$@" ;;
    stats) shift; cmd_stats "$@" ;;
    pss) shift; cmd_pss "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    queue-empty) shift; cmd_queue_empty "$@" ;;
    *) usage ;;
esac
