#!/usr/bin/python3
"""A test milter for tern's milter client, on Debian's python3-milter (pymilter,
itself on Sendmail's libmilter): every reply and every modification, chosen by
the message. Usage: test_milter.py inet:PORT@127.0.0.1

Per recipient at RCPT: reject@ -> REJECT, temp@ -> TEMPFAIL, custom@ -> a
multi-line 550 reply (SMFIR_REPLYCODE); others CONTINUE.
At end of message, by Subject:
  all-actions  every modification, a quarantine, progress, then ACCEPT
  reject / tempfail / discard   that reply
  reply        554 5.7.1 with a doubled percent sign
  echo         headers saying which macros, header names and body size it saw
  slow         progress every 0.4 s for 2 s, then CONTINUE
anything else: CONTINUE.
"""
import sys
import time

import Milter


class TestMilter(Milter.Base):
    def __init__(self):
        self.headers = []
        self.bodybytes = b""
        self.rcpts = []
        self.macros = {}

    def connect(self, hostname, family, hostaddr):
        self.macros["connect"] = {m: self.getsymval(m) for m in ("j", "_", "{daemon_name}", "{client_addr}", "v")}
        self.client = (hostname, hostaddr)
        return Milter.CONTINUE

    def envfrom(self, f, *params):
        self.headers, self.bodybytes, self.rcpts = [], b"", []
        self.sender = f
        self.macros["mail"] = {m: self.getsymval(m) for m in ("i", "{mail_addr}")}
        if f.startswith("<tempfail@"):
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def envrcpt(self, to, *params):
        local = to.strip("<>").split("@")[0]
        if local == "reject":
            return Milter.REJECT
        if local == "temp":
            return Milter.TEMPFAIL
        if local == "custom":
            self.setreply("550", "5.1.1", "custom rejection", "second line")
            return Milter.REJECT
        self.rcpts.append(to)
        self.macros["rcpt"] = {m: self.getsymval(m) for m in ("{rcpt_addr}",)}
        return Milter.CONTINUE

    # No reply per header (SMFIP_NR_HDR): the MTA must not wait for one.
    @Milter.noreply
    def header(self, name, value):
        self.headers.append((name, value))
        return Milter.CONTINUE

    def body(self, chunk):
        self.bodybytes += chunk
        return Milter.CONTINUE

    def subject(self):
        for n, v in self.headers:
            if n.lower() == "subject":
                return v.strip()
        return ""

    def eom(self):
        s = self.subject()
        if s == "all-actions":
            self.addheader("X-Test-Added", "yes")
            self.addheader("X-Test-Inserted", "top", 0)
            self.chgheader("Subject", 1, "changed subject")
            self.chgheader("X-Delete-Me", 1, "")
            self.replacebody(b"replaced body\r\n")
            self.replacebody(b"second line\r\n")
            self.addrcpt("<added@example.net>")
            self.addrcpt("<added2@example.net>", "NOTIFY=NEVER")
            self.delrcpt("<b@example.org>")
            self.chgfrom("<new-sender@example.com>", "RET=HDRS")
            self.quarantine("held by test milter")
            self.progress()
            return Milter.ACCEPT
        if s == "reject":
            return Milter.REJECT
        if s == "tempfail":
            return Milter.TEMPFAIL
        if s == "discard":
            return Milter.DISCARD
        if s == "reply":
            self.setreply("554", "5.7.1", "no thanks, 100%% sure")
            return Milter.REJECT
        if s == "echo":
            seen = []
            for stage in ("connect", "mail", "rcpt"):
                for k, val in sorted(self.macros.get(stage, {}).items()):
                    seen.append("%s=%s" % (k, val))
            self.addheader("X-Seen-Macros", "; ".join(seen))
            self.addheader("X-Seen-Headers", ",".join(n for n, _ in self.headers))
            self.addheader("X-Seen-Body", "%d %s" % (len(self.bodybytes), self.bodybytes[:20].hex()))
            self.addheader("X-Seen-Rcpts", ",".join(self.rcpts))
            return Milter.CONTINUE
        if s == "slow":
            for _ in range(5):
                time.sleep(0.4)
                self.progress()
            return Milter.CONTINUE
        return Milter.CONTINUE

    def abort(self):
        return Milter.CONTINUE


def main():
    Milter.factory = TestMilter
    sys.stdout.write("test milter on %s\n" % sys.argv[1])
    sys.stdout.flush()
    Milter.runmilter("tern-test-milter", sys.argv[1], timeout=60)


if __name__ == "__main__":
    main()
