#!/usr/bin/python3
"""A milter that does, on demand, every thing a milter can do to a message,
for tern's tests (Debian's python3-milter, which wraps Sendmail's libmilter).

What it does is chosen per test by a spec: directives separated by ';' or
newlines, from the environment variable TEST_MILTER_SPEC (every connection)
and from X-Test-Milter: headers of the message itself (from the end of the
headers on). A directive is

    STAGE[(MATCH)] ACTION [ARGUMENTS]

STAGE is connect, helo, mail, rcpt, header, eoh, body or eom; with (MATCH) it
applies only when the stage's argument (client address, HELO name, sender,
recipient, header name) contains MATCH, case-insensitively. ACTION is one of

    continue | accept | reject | tempfail | discard     the reply to the stage
    reply CODE XCODE TEXT...     a custom reply (setreply), then reject (5xx)
                                 or tempfail (4xx)
    sleep SECONDS                wait before answering (time-out tests)
    progress                     at eom: send "progress", wait 1 s
    addheader NAME VALUE...      at eom
    insheader INDEX NAME VALUE...
    chgheader NAME INDEX VALUE...    (INDEX counts from 1 among NAME headers)
    delheader NAME INDEX
    replacebody TEXT...          \\r \\n \\t and \\\\ are unescaped
    addrcpt ADDRESS [ESMTP-PARAMETERS...]
    delrcpt ADDRESS
    chgfrom ADDRESS [ESMTP-PARAMETERS...]
    quarantine REASON...

Every callback is written as one line to the --log file: the stage, its
arguments, a "|", and the macros the MTA sent that the milter can see as
NAME=VALUE, each token percent-encoded; so a test can check what tern told
the milter.

    test_milter.py --socket inet:PORT@127.0.0.1 --log FILE
"""

import argparse
import os
import sys
import time
from urllib.parse import quote

import Milter

MACROS = [
    "j", "_", "i", "v", "{daemon_name}", "{daemon_addr}", "{daemon_port}", "{if_name}", "{if_addr}",
    "{client_addr}", "{client_port}", "{client_name}", "{client_ptr}", "{client_resolve}",
    "{client_connections}", "{auth_type}", "{auth_authen}", "{auth_author}", "{auth_ssf}",
    "{mail_mailer}", "{mail_host}", "{mail_addr}", "{rcpt_mailer}", "{rcpt_host}", "{rcpt_addr}",
    "{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}", "{msg_id}",
]

LOG = None
STAGES = ("connect", "helo", "mail", "rcpt", "header", "eoh", "body", "eom")


def parse(spec):
    """[(stage, match or None, action, [args])]"""
    out = []
    for raw in spec.replace("\n", ";").split(";"):
        d = raw.strip()
        if not d:
            continue
        head, _, rest = d.partition(" ")
        match = None
        if "(" in head and head.endswith(")"):
            head, match = head[:-1].split("(", 1)
        if head not in STAGES:
            print("test_milter: unknown stage in %r" % d, file=sys.stderr)
            continue
        action, _, args = rest.strip().partition(" ")
        out.append((head, match, action, args.strip()))
    return out


def unescape(s):
    return s.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")


class TestMilter(Milter.Base):
    def __init__(self):
        self.spec = parse(os.environ.get("TEST_MILTER_SPEC", ""))
        self.msg_spec = []
        self.bodylen = 0

    def record(self, stage, *args):
        macros = {}
        for m in MACROS:
            try:
                v = self.getsymval(m)
            except Exception:
                v = None
            if v is not None:
                macros[m] = v
        q = lambda s: quote(s if isinstance(s, str) else repr(s), safe="")
        line = " ".join([q(stage)] + [q(a) for a in args] + ["|"] + [q(k) + "=" + q(v) for k, v in macros.items()])
        with open(LOG, "a") as f:
            f.write(line + "\n")

    def run(self, stage, arg=""):
        """Apply the directives of this stage; the reply code."""
        rc = Milter.CONTINUE
        decided = False
        for st, match, action, args in self.spec + self.msg_spec:
            if st != stage:
                continue
            if match is not None and match.lower() not in (arg or "").lower():
                continue
            if action == "sleep":
                time.sleep(float(args))
            elif action == "progress":
                self.progress()
                time.sleep(1)
            elif action in ("continue", "accept", "reject", "tempfail", "discard"):
                if not decided:
                    rc = {"continue": Milter.CONTINUE, "accept": Milter.ACCEPT, "reject": Milter.REJECT,
                          "tempfail": Milter.TEMPFAIL, "discard": Milter.DISCARD}[action]
                    decided = True
            elif action == "reply":
                code, xcode, text = (args.split(" ", 2) + ["", ""])[:3]
                if not decided:
                    self.setreply(code, xcode, text)
                    rc = Milter.REJECT if code.startswith("5") else Milter.TEMPFAIL
                    decided = True
            elif action == "addheader":
                name, _, value = args.partition(" ")
                self.addheader(name, value)
            elif action == "insheader":
                idx, name, value = (args.split(" ", 2) + ["", ""])[:3]
                self.addheader(name, value, int(idx))
            elif action == "chgheader":
                name, idx, value = (args.split(" ", 2) + ["", ""])[:3]
                self.chgheader(name, int(idx), value)
            elif action == "delheader":
                name, idx = (args.split(" ", 1) + [""])[:2]
                self.chgheader(name, int(idx or "1"), None)
            elif action == "replacebody":
                self.replacebody(unescape(args).encode("utf-8"))
            elif action == "addrcpt":
                addr, _, params = args.partition(" ")
                self.addrcpt("<%s>" % addr.strip("<>"), params or None)
            elif action == "delrcpt":
                self.delrcpt("<%s>" % args.strip("<>"))
            elif action == "chgfrom":
                addr, _, params = args.partition(" ")
                self.chgfrom("<%s>" % addr.strip("<>"), params or None)
            elif action == "quarantine":
                self.quarantine(args)
            else:
                print("test_milter: unknown action %r" % action, file=sys.stderr)
        return rc

    def connect(self, hostname, family, hostaddr):
        addr = hostaddr[0] if isinstance(hostaddr, tuple) else str(hostaddr)
        self.record("connect", hostname, addr)
        return self.run("connect", addr)

    def hello(self, hostname):
        self.record("helo", hostname)
        return self.run("helo", hostname)

    def envfrom(self, f, *params):
        self.msg_spec = []
        self.bodylen = 0
        self.record("mail", f, *params)
        return self.run("mail", f)

    def envrcpt(self, to, *params):
        self.record("rcpt", to, *params)
        return self.run("rcpt", to)

    @Milter.noreply
    def data(self):
        self.record("data")
        return Milter.CONTINUE

    def header(self, name, value):
        self.record("header", name, value)
        if name.lower() == "x-test-milter":
            self.msg_spec += parse(value)
        return self.run("header", name)

    def eoh(self):
        self.record("eoh")
        return self.run("eoh")

    def body(self, chunk):
        self.bodylen += len(chunk)
        self.record("body", chunk.decode("utf-8", "replace"))
        return self.run("body")

    def eom(self):
        self.record("eom", str(self.bodylen))
        return self.run("eom")

    def abort(self):
        self.record("abort")
        return Milter.CONTINUE

    def close(self):
        self.record("close")
        return Milter.CONTINUE


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--timeout", type=int, default=60)
    a = ap.parse_args()
    LOG = a.log
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGBODY | Milter.ADDRCPT | Milter.ADDRCPT_PAR | Milter.DELRCPT
                     | Milter.CHGHDRS | Milter.QUARANTINE | Milter.CHGFROM | Milter.SETSYMLIST)
    print("test_milter: listening on %s" % a.socket, file=sys.stderr, flush=True)
    Milter.runmilter("test_milter", a.socket, a.timeout)


if __name__ == "__main__":
    main()
