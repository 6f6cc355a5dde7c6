# tern: build, run, test. See README.md.

CARGO   ?= cargo
PREFIX  ?= /usr/local
DEVCONF := etc/tern.dev.conf

SBINDIR ?= $(PREFIX)/sbin
BINDIR  ?= $(PREFIX)/bin
SPOOL   ?= /var/spool/tern
# The group that alone may write the maildrop (Postfix's postdrop): sendmail is
# setgid to it. Create it first: groupadd --system tern
GROUP   ?= tern

.PHONY: all build release run test check clippy fmt clean install fuzz fuzz-build fuzz-ci

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Start ternd in the foreground on the development config: 127.0.0.1:2525,
# spool and mailboxes under ./var.
run: build
	@mkdir -p var/spool var/mail
	@echo "ternd on 127.0.0.1:2525 (config $(DEVCONF)); spool in ./var/spool, mail in ./var/mail."
	@echo "Send it a message from another terminal, for example:"
	@printf '%s\n' '  python3 -c '"'"'import smtplib; smtplib.SMTP("127.0.0.1", 2525).sendmail("me@localhost", ["root@localhost"], "Subject: hi\r\n\r\nhello\r\n")'"'"
	@echo "or by hand: telnet 127.0.0.1 2525 (or nc -C 127.0.0.1 2525). Mail for root@localhost lands in ./var/mail/root/new/."
	@echo "Stop ternd with Ctrl-C."
	./target/debug/ternd -d -f $(DEVCONF)

# Every test: unit tests and the integration tests that start the real binaries.
test:
	$(CARGO) test --all-targets

# Lints: formatting, clippy with warnings as errors, and the man pages when mandoc is here.
check: fmt clippy
	@if command -v mandoc >/dev/null 2>&1 && ls man/*.[0-9] >/dev/null 2>&1; then mandoc -Tlint -Wwarning man/*.[0-9]; fi

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
FUZZ_TARGETS    ?= command address dot envelope maildrop config aliases dsn reply proxy sasl cmdline session
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

# What CI runs: every target briefly (13 targets x FUZZ_CI_SECONDS, plus the build).
fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_CI_SECONDS)

# Binaries, the mailq/newaliases links, the config skeleton (only when absent), and
# the spool with the maildrop's privileges: root 0711, maildrop 1730 root:$(GROUP),
# sendmail setgid $(GROUP) (src/spool/README.md, "Permissions").
install: release
	getent group $(GROUP) >/dev/null || { echo "create the group first: groupadd --system $(GROUP)"; exit 1; }
	install -d -m 755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR)
	install -m 755 target/release/ternd $(DESTDIR)$(SBINDIR)/ternd
	install -m 755 target/release/ternctl $(DESTDIR)$(SBINDIR)/ternctl
	install -m 2755 -o root -g $(GROUP) target/release/sendmail $(DESTDIR)$(SBINDIR)/sendmail
	ln -sf $(SBINDIR)/sendmail $(DESTDIR)$(BINDIR)/mailq
	ln -sf $(SBINDIR)/sendmail $(DESTDIR)$(BINDIR)/newaliases
	[ -d $(DESTDIR)/etc/tern ] || { install -d -m 755 $(DESTDIR)/etc/tern && install -m 644 etc/tern.conf $(DESTDIR)/etc/tern/tern.conf; }
	install -d -m 711 -o root -g root $(DESTDIR)$(SPOOL)
	install -d -m 1730 -o root -g $(GROUP) $(DESTDIR)$(SPOOL)/maildrop

clean:
	$(CARGO) clean
	rm -rf var
