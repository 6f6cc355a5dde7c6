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

.PHONY: all build release run test check clippy fmt clean install soak

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

# Soak (issue 8): 100,000 messages through 50 sessions into smtp-sink via a
# release ternd; checks delivery, flat RSS, no fd or thread leak. Smaller:
# make soak SOAK_ARGS='-m 20000'. See tests/bench/README.md.
SOAK_ARGS ?=
soak:
	$(CARGO) build --release --bins --examples
	tests/bench/soak.sh $(SOAK_ARGS)

# Lints: formatting, clippy with warnings as errors, and the man pages when mandoc is here.
check: fmt clippy
	@if command -v mandoc >/dev/null 2>&1 && ls man/*.[0-9] >/dev/null 2>&1; then mandoc -Tlint -Wwarning man/*.[0-9]; fi

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

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
