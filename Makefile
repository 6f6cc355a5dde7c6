# tern: build, run, test. See README.md.

CARGO   ?= cargo
DEVCONF := etc/tern.dev.conf
# The account `make run` started as root drops to (the dev config names none).
RUN_USER ?= nobody

# Where `make install` puts things. DESTDIR stages the whole tree under another
# root (for packages); without it, run as root, install also creates the `tern`
# user and group and sets the owners.
PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
EXAMPLESDIR ?= $(PREFIX)/share/examples/tern
CONFDIR ?= /etc/tern
SPOOL   ?= /var/spool/tern
# The account ternd runs as after binding its ports (tern.conf `user`), and the
# group that alone may write the maildrop (Postfix's postdrop): sendmail is setgid
# to it. Not USER/GROUP: the shell exports USER.
TERN_USER  ?= tern
TERN_GROUP ?= tern
# The binaries install copies: `make` builds them here.
BINARIES ?= target/release

BINS := ternd sendmail ternctl
MAN5 := aliases.5 tern.conf.5
MAN8 := sendmail.8 ternctl.8 ternd.8
EXAMPLES := aliases inetd.conf.sample ternd.service rc.d/ternd init.d/ternd xinetd.d/smtp

.PHONY: all build release run test check clippy fmt lint-man clean install install-strip install-user install-mta uninstall uninstall-mta soak bench bench-postfix crash-duplicates fuzz fuzz-build fuzz-ci

# `make`: the release binaries, what `make install` installs.
all: release

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Start ternd in the foreground on the development config etc/tern.dev.conf,
# on 127.0.0.1:$(PORT) (make run PORT=2600), with its spool and mailboxes under
# $(RUNDIR). The configuration it runs is $(RUNDIR)/tern.dev.conf, written here
# from the dev config with the port and directory put in (and, as root, the
# account to drop to): edit etc/tern.dev.conf, not that copy.
PORT    ?= 2525
RUNDIR  ?= ./var
# Where `make run` finds ternd: the debug build `make build` makes.
RUN_BINARIES ?= target/debug
RUNCONF := $(RUNDIR)/tern.dev.conf

run: build
	@case "$(PORT)" in ''|*[!0-9]*) echo "make run: PORT=$(PORT) is not a port number" >&2; exit 2 ;; esac
	@if [ "$(PORT)" -lt 1 ] || [ "$(PORT)" -gt 65535 ]; then echo "make run: PORT=$(PORT) is not between 1 and 65535" >&2; exit 2; fi
	@mkdir -p $(RUNDIR)/spool $(RUNDIR)/mail
	@{ echo "# Written by make run (PORT=$(PORT), RUNDIR=$(RUNDIR)) from $(DEVCONF): edit that file."; \
		sed -e 's|^listen = .*|listen = 127.0.0.1:$(PORT)|' -e 's|\./var/|$(RUNDIR)/|g' $(DEVCONF); \
		if [ "$$(id -u)" = 0 ]; then echo; echo "# Added by make run as root: ternd never keeps root."; echo "user = $(RUN_USER)"; fi; \
	} > $(RUNCONF)
	@grep -qx 'listen = 127.0.0.1:$(PORT)' $(RUNCONF) || { echo "make run: no listen line in $(DEVCONF)" >&2; exit 2; }
	@echo "ternd on 127.0.0.1:$(PORT) (config $(RUNCONF), from $(DEVCONF)); spool in $(RUNDIR)/spool, mail in $(RUNDIR)/mail."
	@echo "Send it a message from another terminal, for example:"
	@printf '%s\n' '  python3 -c '"'"'import smtplib; smtplib.SMTP("127.0.0.1", $(PORT)).sendmail("me@localhost", ["root@localhost"], "Subject: hi\r\n\r\nhello\r\n")'"'"
	@echo "or by hand: telnet 127.0.0.1 $(PORT) (or nc -C 127.0.0.1 $(PORT)). Mail for root@localhost lands in $(RUNDIR)/mail/root/new/."
	@echo "Stop ternd with Ctrl-C."
	@if [ "$$(id -u)" = 0 ]; then echo "Started as root: ternd drops to $(RUN_USER) after binding (user = $(RUN_USER) in $(RUNCONF))."; fi
	@exec $(RUN_BINARIES)/ternd -d -f $(RUNCONF)

# Every test: unit tests and the integration tests that start the real binaries.
# A test that cannot run here (no root, a peer's package missing) records why in
# SKIP_LOG (tests/integration/common/skip.rs); they are listed at the end, so a
# skip never passes unseen. Under CI=true such a test fails instead.
SKIP_LOG ?= $(or $(CARGO_TARGET_DIR),target)/test-skips.txt
test:
	@rm -f $(SKIP_LOG)
	@status=0; TERN_SKIP_LOG=$(abspath $(SKIP_LOG)) $(CARGO) test --all-targets || status=$$?; \
	if [ -s $(SKIP_LOG) ]; then \
		echo; echo "$$(wc -l < $(SKIP_LOG)) tests skipped (they count as passed above):"; \
		sort $(SKIP_LOG) | sed 's/^/  /'; \
	else echo; echo "0 tests skipped"; fi; \
	exit $$status

# Soak (issue 8): 100,000 messages through 50 sessions into smtp-sink via a
# release ternd; checks delivery, flat RSS, no fd or thread leak. Smaller:
# make soak SOAK_ARGS='-m 20000'. See tests/bench/README.md.
SOAK_ARGS ?=
soak:
	$(CARGO) build --release --bins --examples
	tests/bench/soak.sh $(SOAK_ARGS)

# Benchmark (issue 9): the protocol and durability ceilings, then a release
# ternd accepting, relaying to a sink and delivering locally, with its memory
# and CPU; a table of ratios to the ceilings and the targets at the end. Never
# fails on a missed target, only on a broken load. Knobs are environment or
# make variables: make bench BENCH_MESSAGES=1000 (see tests/bench/README.md).
# BENCH_SCRIPTS: further benchmarks bench.sh runs after its own loads, one
# after the other, each printing its table and a last line `BENCH key=value...`
# whose keys join bench.sh's BENCH line (the contract: tests/bench/README.md,
# "Further scripts"). Add a script to this list; empty it to skip them all.
BENCH_SCRIPTS ?= tests/bench/chunking.sh tests/bench/milter.sh tests/bench/auth.sh
bench:
	$(CARGO) build --release --bins --examples
	BENCH_SCRIPTS="$(BENCH_SCRIPTS)" tests/bench/bench.sh

# The same, side by side with a private Postfix instance (installed with
# apt-get when missing and run as root).
bench-postfix:
	tests/bench/postfix.sh install
	$(MAKE) bench BENCH_POSTFIX=1

# Duplicate deliveries after a crash (issue 16): kill -9 ternd CRASH_KILLS
# times (default 20) while it relays to two scripted next hops, and print the
# duplicates per kill against the transactions in flight at each kill. A
# measurement, not a test: it never fails on the figures. See
# tests/bench/README.md.
CRASH_KILLS ?= 20
crash-duplicates:
	CRASH_KILLS=$(CRASH_KILLS) $(CARGO) test --test integration crash::crash_duplicates_over_many_kills -- --ignored --nocapture

# Lints: formatting, clippy with warnings as errors, and the man pages.
check: fmt clippy lint-man

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# Fuzzing (tests/fuzz/README.md): cargo-fuzz (cargo install cargo-fuzz) on the
# stable toolchain. `-s none`: no sanitizer, because ASan needs the nightly-only
# -Zsanitizer and the fuzzed code is safe Rust (the only unsafe is sys.rs, which
# no target reaches), so what the fuzzer looks for is panics, failed assertions,
# overflow (checks on: cargo-fuzz's default build) and hangs. Each target runs
# FUZZ_SECONDS; new inputs go to tests/fuzz/work (with a log per target), the committed seeds in
# tests/fuzz/corpus are only read; a crash stops make, its input is in
# tests/fuzz/artifacts/TARGET/.
FUZZ_SECONDS    ?= 60
FUZZ_CI_SECONDS ?= 10
FUZZ_TARGETS    ?= command address dot envelope maildrop config aliases dsn reply proxy sasl cmdline session message milter policy
FUZZ            := $(CARGO) fuzz
FUZZ_OPTS       := --fuzz-dir tests/fuzz -s none

fuzz-build:
	$(FUZZ) build $(FUZZ_OPTS)

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
		mkdir -p tests/fuzz/work/$$t; \
		log=tests/fuzz/work/$$t.log; \
		if $(FUZZ) run $(FUZZ_OPTS) $$t tests/fuzz/work/$$t tests/fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >$$log 2>&1; \
		then grep -E '^Done [0-9]+ runs' $$log || tail -3 $$log; \
		else tail -40 $$log; echo "fuzz: $$t FAILED; the input is in tests/fuzz/artifacts/$$t/"; exit 1; fi; \
	done

# What CI runs: every target briefly (16 targets x FUZZ_CI_SECONDS, plus the build).
fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_CI_SECONDS)


# The man pages, warnings included: mandoc -T lint (which exits non-zero on
# any) and groff -ww (which must print nothing), each when installed; CI
# installs both (.ci/run). With neither the lint is skipped with a note.
# tests/integration/manpages.rs also checks that each renders whole.
lint-man:
	@ran=; \
	if command -v mandoc >/dev/null 2>&1; then mandoc -Tlint -Wwarning man/*.[0-9] || exit 1; ran=mandoc; fi; \
	if command -v groff >/dev/null 2>&1; then \
		for p in man/*.[0-9]; do out=$$(groff -mandoc -ww -z "$$p" 2>&1); \
			if [ -n "$$out" ]; then echo "groff -mandoc -ww -z $$p:"; echo "$$out"; exit 1; fi; done; \
		ran="$$ran groff"; \
	fi; \
	if [ -z "$$ran" ]; then echo "lint-man: neither mandoc nor groff installed; man pages not linted"; fi

# Installs the binaries, the mailq/newaliases links, the man pages, the example
# rc scripts, the configuration and aliases (only when absent), and the spool
# with the maildrop's privileges (src/spool/README.md, "Permissions"): root 0711
# root, queue directories 0700 $(TERN_USER), maildrop 1730 root:$(TERN_GROUP),
# sendmail setgid $(TERN_GROUP) (2755).
#
# Owners are set, and the user and group created, only in a real install (no
# DESTDIR, run as root). Staged with DESTDIR, nothing is chowned, sendmail stays
# 0755 (setgid to the wrong group would be worse than none), and install prints
# the commands the package must run on the target.
#
# install does not build: `make && sudo make install` (root often has no cargo).
# `make install-strip` strips the binaries as it installs them (GNU's name for
# it); plain install keeps the release profile's debug info, for perf and gdb.
INSTALL_STRIP ?=
install-strip:
	$(MAKE) --no-print-directory install INSTALL_STRIP=-s

install:
	@for b in $(BINS); do \
		[ -x $(BINARIES)/$$b ] || { echo "make install: $(BINARIES)/$$b is missing; run make first" >&2; exit 1; }; \
	done
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory install-user; fi
	install -d -m 755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install $(INSTALL_STRIP) -m 755 $(BINARIES)/ternd $(DESTDIR)$(SBINDIR)/ternd
	install $(INSTALL_STRIP) -m 755 $(BINARIES)/ternctl $(DESTDIR)$(SBINDIR)/ternctl
	install $(INSTALL_STRIP) -m 755 $(BINARIES)/sendmail $(DESTDIR)$(SBINDIR)/sendmail
	ln -sf sendmail $(DESTDIR)$(SBINDIR)/mailq
	ln -sf sendmail $(DESTDIR)$(SBINDIR)/newaliases
	ln -sf $(SBINDIR)/sendmail $(DESTDIR)$(BINDIR)/mailq
	ln -sf $(SBINDIR)/sendmail $(DESTDIR)$(BINDIR)/newaliases
	for p in $(MAN5); do install -m 644 man/$$p $(DESTDIR)$(MANDIR)/man5/$$p; done
	for p in $(MAN8); do install -m 644 man/$$p $(DESTDIR)$(MANDIR)/man8/$$p; done
	ln -sf sendmail.8 $(DESTDIR)$(MANDIR)/man8/mailq.8
	ln -sf sendmail.8 $(DESTDIR)$(MANDIR)/man8/newaliases.8
	install -d -m 755 $(DESTDIR)$(EXAMPLESDIR)/rc.d $(DESTDIR)$(EXAMPLESDIR)/init.d $(DESTDIR)$(EXAMPLESDIR)/xinetd.d
	@for f in $(EXAMPLES); do \
		case $$f in rc.d/*|init.d/*) m=755 ;; *) m=644 ;; esac; \
		echo "install -m $$m etc/$$f $(DESTDIR)$(EXAMPLESDIR)/$$f"; \
		sed -e 's|/usr/local/sbin|$(SBINDIR)|g' -e 's|/etc/tern|$(CONFDIR)|g' etc/$$f > $(DESTDIR)$(EXAMPLESDIR)/$$f && \
		chmod $$m $(DESTDIR)$(EXAMPLESDIR)/$$f || exit 1; \
	done
	install -d -m 755 $(DESTDIR)$(CONFDIR)
	@for f in tern.conf aliases; do \
		if [ -e $(DESTDIR)$(CONFDIR)/$$f ]; then \
			echo "keeping $(DESTDIR)$(CONFDIR)/$$f (the new example is $(EXAMPLESDIR)/$$f)"; \
		else \
			echo "install -m 644 etc/$$f $(DESTDIR)$(CONFDIR)/$$f"; \
			install -m 644 etc/$$f $(DESTDIR)$(CONFDIR)/$$f; \
		fi; \
	done
	install -d -m 711 $(DESTDIR)$(SPOOL)
	for d in tmp msg env hold corrupt; do install -d -m 700 $(DESTDIR)$(SPOOL)/$$d; done
	install -d -m 1730 $(DESTDIR)$(SPOOL)/maildrop
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
		set -x; \
		chown root:$(TERN_GROUP) $(SBINDIR)/sendmail && chmod 2755 $(SBINDIR)/sendmail && \
		chown 0:0 $(SPOOL) && chmod 711 $(SPOOL) && \
		for d in tmp msg env hold corrupt; do chown -R $(TERN_USER):$(TERN_GROUP) $(SPOOL)/$$d || exit 1; done && \
		chown root:$(TERN_GROUP) $(SPOOL)/maildrop && chmod 1730 $(SPOOL)/maildrop; \
	else \
		echo; \
		echo "Staged install (DESTDIR set, or not root): no owners set, no user created."; \
		echo "On the target system, as root:"; \
		echo "  groupadd --system $(TERN_GROUP); useradd --system -g $(TERN_GROUP) -d $(SPOOL) -s /usr/sbin/nologin $(TERN_USER)"; \
		echo "  chown root:$(TERN_GROUP) $(SBINDIR)/sendmail && chmod 2755 $(SBINDIR)/sendmail"; \
		echo "  chown 0:0 $(SPOOL) && chmod 711 $(SPOOL)"; \
		echo "  chown -R $(TERN_USER):$(TERN_GROUP) $(SPOOL)/tmp $(SPOOL)/msg $(SPOOL)/env $(SPOOL)/hold $(SPOOL)/corrupt"; \
		echo "  chown root:$(TERN_GROUP) $(SPOOL)/maildrop && chmod 1730 $(SPOOL)/maildrop"; \
	fi

# The `tern` group and user, when missing: Linux shadow-utils, else pw(8) (FreeBSD),
# else useradd/groupadd without the Linux flags (NetBSD).
install-user:
	@if ! getent group $(TERN_GROUP) >/dev/null 2>&1; then \
		echo "creating group $(TERN_GROUP)"; \
		if command -v groupadd >/dev/null 2>&1; then groupadd --system $(TERN_GROUP) 2>/dev/null || groupadd $(TERN_GROUP); \
		elif command -v pw >/dev/null 2>&1; then pw groupadd $(TERN_GROUP); \
		else echo "cannot create group $(TERN_GROUP): create it by hand" >&2; exit 1; fi; \
	fi
	@if ! id -u $(TERN_USER) >/dev/null 2>&1; then \
		echo "creating user $(TERN_USER)"; \
		if command -v useradd >/dev/null 2>&1; then \
			useradd --system -g $(TERN_GROUP) -d $(SPOOL) -s /usr/sbin/nologin -c "tern mail system" $(TERN_USER) 2>/dev/null || \
			useradd -g $(TERN_GROUP) -d $(SPOOL) -s /sbin/nologin -c "tern mail system" $(TERN_USER); \
		elif command -v pw >/dev/null 2>&1; then \
			pw useradd $(TERN_USER) -g $(TERN_GROUP) -d $(SPOOL) -s /usr/sbin/nologin -c "tern mail system"; \
		else echo "cannot create user $(TERN_USER): create it by hand" >&2; exit 1; fi; \
	fi

# tern as the system's MTA: `make install-mta` points the programs that mail(1),
# cron and scripts call, $(MTA_LINKS), at tern's $(SBINDIR)/sendmail (it acts as
# mailq and newaliases by the name it is called with), and keeps what was there
# as NAME$(MTA_SAVED). On Debian and its derivatives (dpkg-divert found, and
# $(DESTDIR)/var/lib/dpkg there) that is a local diversion made with
# `dpkg-divert --rename`: the file moves aside, and a package upgrade (Postfix's,
# Exim's) installs its new version there too instead of over tern's link.
# Elsewhere the file is renamed. `make uninstall-mta` (also run by uninstall)
# removes tern's links and puts each original back, removing the diversion.
# A link that is no longer tern's (changed by hand or by a package) is left
# alone, with its original, and named. On BSD systems with mailwrapper(8)
# edit /etc/mail/mailer.conf instead; on Red Hat-like systems use
# alternatives(8) (see README.md).
MTA_LINKS   ?= /usr/sbin/sendmail /usr/lib/sendmail /usr/bin/mailq /usr/bin/newaliases
MTA_SAVED   := .pre-tern
DPKG_DIVERT ?= dpkg-divert
# How install-mta and uninstall-mta keep the originals: the dpkg-divert command
# line (with --root for a DESTDIR that holds a dpkg database), or empty for a
# plain rename.
MTA_DIVERT = $$(if command -v $(DPKG_DIVERT) >/dev/null 2>&1 && [ -d "$(DESTDIR)/var/lib/dpkg" ]; then \
	echo "$(DPKG_DIVERT)$(if $(DESTDIR), --root $(DESTDIR)) --local --rename"; fi)

install-mta:
	@[ -x $(DESTDIR)$(SBINDIR)/sendmail ] || { echo "make install-mta: $(DESTDIR)$(SBINDIR)/sendmail is missing: make install first" >&2; exit 1; }
	@if [ -z "$(DESTDIR)" ] && [ -f /etc/mail/mailer.conf ]; then \
		echo "make install-mta: this system chooses its MTA with mailwrapper(8): point sendmail, mailq and newaliases at $(SBINDIR)/sendmail in /etc/mail/mailer.conf" >&2; exit 1; fi
	@set -e; divert="$(MTA_DIVERT)"; \
	for f in $(MTA_LINKS); do \
		p=$(DESTDIR)$$f; \
		if [ "$$f" = "$(SBINDIR)/sendmail" ]; then echo "$$f is tern's own sendmail (SBINDIR=$(SBINDIR))"; continue; fi; \
		if [ -L "$$p" ] && [ "$$(readlink "$$p")" = "$(SBINDIR)/sendmail" ]; then echo "$$f already points at $(SBINDIR)/sendmail"; continue; fi; \
		case "$$(readlink "$$p" 2>/dev/null)" in /etc/alternatives/*) \
			echo "make install-mta: $$f is managed by alternatives(8): use alternatives --install $$f mta $(SBINDIR)/sendmail 100, or see README.md" >&2; exit 1 ;; esac; \
		if [ -n "$$divert" ]; then \
			echo "$$divert --divert $$f$(MTA_SAVED) --add $$f"; $$divert --divert $$f$(MTA_SAVED) --add $$f; \
		elif [ -e "$$p" ] || [ -L "$$p" ]; then \
			if [ -e "$$p$(MTA_SAVED)" ] || [ -L "$$p$(MTA_SAVED)" ]; then echo "make install-mta: $$p$(MTA_SAVED) exists already: not overwriting it" >&2; exit 1; fi; \
			echo "mv $$p $$p$(MTA_SAVED)"; mv "$$p" "$$p$(MTA_SAVED)"; \
		fi; \
		[ -e "$$p" ] || [ -L "$$p" ] || { mkdir -p "$$(dirname "$$p")"; echo "ln -s $(SBINDIR)/sendmail $$p"; ln -s $(SBINDIR)/sendmail "$$p"; }; \
	done

uninstall-mta:
	@set -e; divert="$(MTA_DIVERT)"; \
	for f in $(MTA_LINKS); do \
		p=$(DESTDIR)$$f; \
		[ "$$f" != "$(SBINDIR)/sendmail" ] || continue; \
		if [ -L "$$p" ] && [ "$$(readlink "$$p")" = "$(SBINDIR)/sendmail" ]; then \
			echo "rm $$p"; rm -f "$$p"; \
		elif [ -e "$$p" ] || [ -L "$$p" ]; then \
			if [ -e "$$p$(MTA_SAVED)" ] || [ -L "$$p$(MTA_SAVED)" ]; then \
				echo "make uninstall-mta: $$f is not tern's link any more: left alone, and the original kept as $$f$(MTA_SAVED)" >&2; fi; \
			continue; \
		fi; \
		if [ -n "$$divert" ] && [ "$$($${divert% --local --rename} --truename $$f)" = "$$f$(MTA_SAVED)" ]; then \
			echo "$$divert --divert $$f$(MTA_SAVED) --remove $$f"; $$divert --divert $$f$(MTA_SAVED) --remove $$f; \
		elif [ -e "$$p$(MTA_SAVED)" ] || [ -L "$$p$(MTA_SAVED)" ]; then \
			echo "mv $$p$(MTA_SAVED) $$p"; mv "$$p$(MTA_SAVED)" "$$p"; \
		fi; \
	done

# Removes what install put under PREFIX, and what install-mta did (uninstall-mta
# first); the configuration in $(CONFDIR), the spool and the tern user stay.
uninstall: uninstall-mta
	rm -f $(DESTDIR)$(SBINDIR)/ternd $(DESTDIR)$(SBINDIR)/ternctl $(DESTDIR)$(SBINDIR)/sendmail
	rm -f $(DESTDIR)$(SBINDIR)/mailq $(DESTDIR)$(SBINDIR)/newaliases
	rm -f $(DESTDIR)$(BINDIR)/mailq $(DESTDIR)$(BINDIR)/newaliases
	for p in $(MAN5); do rm -f $(DESTDIR)$(MANDIR)/man5/$$p; done
	for p in $(MAN8) mailq.8 newaliases.8; do rm -f $(DESTDIR)$(MANDIR)/man8/$$p; done
	for f in $(EXAMPLES); do rm -f $(DESTDIR)$(EXAMPLESDIR)/$$f; done
	-rmdir $(DESTDIR)$(EXAMPLESDIR)/rc.d $(DESTDIR)$(EXAMPLESDIR)/init.d $(DESTDIR)$(EXAMPLESDIR)/xinetd.d $(DESTDIR)$(EXAMPLESDIR) 2>/dev/null
	@echo "left in place: $(DESTDIR)$(CONFDIR), $(DESTDIR)$(SPOOL) and the $(TERN_USER) user"

clean:
	$(CARGO) clean
	rm -rf var
