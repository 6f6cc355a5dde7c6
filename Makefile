# tern: build, run, test. See README.md.

CARGO   ?= cargo
PREFIX  ?= /usr/local
DEVCONF := etc/tern.dev.conf

.PHONY: all build release run test check clippy fmt clean

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
	@echo "  python3 -c 'import smtplib; smtplib.SMTP(\"127.0.0.1\", 2525).sendmail(\"me@localhost\", [\"root@localhost\"], \"Subject: hi\\r\\n\\r\\nhello\\r\\n\")'"
	@echo "or by hand: telnet 127.0.0.1 2525 (or nc -C 127.0.0.1 2525). Stop ternd with Ctrl-C."
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

clean:
	$(CARGO) clean
	rm -rf var
