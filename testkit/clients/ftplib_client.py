#!/usr/bin/env python3
"""Drive an FTPS server with Python's ftplib, for the interop tests and `cargo xtask bench`.

Stock ``ftplib.FTP_TLS`` opens every data connection with a fresh TLS session, so a server that requires data
connections to resume the control session (vsftpd's ``require_ssl_reuse=YES``, ftps-server's default) refuses it:
that is expected. ``ReusingFTP_TLS`` is the small subclass that makes ftplib reuse the control connection's TLS
session on its data connections, as RFC 4217 section 10.2 and every serious client (curl, lftp, FileZilla) do.

Usage: ftplib_client.py [--stock] [--tls12] [--insecure] HOST PORT USER PASSWORD CAFILE STEP...
Steps (one session, in order; ':' separates arguments):
  put:LOCAL:REMOTE       get:REMOTE:LOCAL        putdir:LOCALDIR:REMOTEDIR  getdir:REMOTEDIR:LOCALDIR
  list[:DIR]             nlst[:DIR]              mlsd[:DIR]                 mkd:DIR
  del:REMOTE             size:REMOTE             rename:FROM:TO
  resume-get:REMOTE:LOCAL   (REST from the local file's size, appending to it)
  resume-put:LOCAL:REMOTE   (SIZE, then REST + STOR from there)
Prints one line per step and ``elapsed STEP SECONDS``; exits non-zero on the first failure.
"""

import ftplib
import os
import ssl
import sys
import time


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


def put(ftp, local, remote, rest=None):
    with open(local, "rb") as f:
        if rest:
            f.seek(rest)
        return ftp.storbinary("STOR " + remote, f, blocksize=65536, rest=rest)


def get(ftp, remote, local, rest=None):
    with open(local, "ab" if rest else "wb") as f:
        return ftp.retrbinary("RETR " + remote, f.write, blocksize=65536, rest=rest)


def main(argv):
    stock = "--stock" in argv
    tls12 = "--tls12" in argv
    insecure = "--insecure" in argv
    args = [a for a in argv if not a.startswith("--")]
    host, port, user, password, cafile, *steps = args
    context = ssl.create_default_context(cafile=None if insecure else cafile)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    cls = ftplib.FTP_TLS if stock else ReusingFTP_TLS
    ftp = cls(context=context, timeout=60)
    ftp.connect(host, int(port))
    ftp.auth()
    ftp.login(user, password)
    ftp.prot_p()
    print("tls", ftp.sock.version())
    for step in steps:
        op, *rest = step.split(":")
        started = time.monotonic()
        if op == "put":
            print(put(ftp, rest[0], rest[1]))
        elif op == "get":
            print(get(ftp, rest[0], rest[1]))
        elif op == "putdir":
            names = sorted(os.listdir(rest[0]))
            for name in names:
                put(ftp, os.path.join(rest[0], name), rest[1] + "/" + name)
            print("putdir", len(names))
        elif op == "getdir":
            os.makedirs(rest[1], exist_ok=True)
            names = [os.path.basename(n) for n in ftp.nlst(rest[0])]
            for name in names:
                get(ftp, rest[0] + "/" + name, os.path.join(rest[1], name))
            print("getdir", len(names))
        elif op == "list":
            lines = []
            print(ftp.retrlines("LIST" + (" " + rest[0] if rest else ""), lines.append))
            for line in lines:
                print("list", line)
        elif op == "nlst":
            for name in ftp.nlst(*rest):
                print("nlst", name)
        elif op == "mlsd":
            for name, facts in ftp.mlsd(*rest):
                print("mlsd", name, facts.get("type"), facts.get("size"))
        elif op == "mkd":
            print(ftp.mkd(rest[0]))
        elif op == "del":
            print(ftp.delete(rest[0]))
        elif op == "size":
            print("size", ftp.size(rest[0]))
        elif op == "rename":
            print(ftp.rename(rest[0], rest[1]))
        elif op == "resume-get":
            have = os.path.getsize(rest[1]) if os.path.exists(rest[1]) else 0
            print(get(ftp, rest[0], rest[1], rest=have or None))
        elif op == "resume-put":
            try:
                have = ftp.size(rest[1]) or 0
            except ftplib.error_perm:
                have = 0
            print(put(ftp, rest[0], rest[1], rest=have or None))
        else:
            raise SystemExit("unknown step " + step)
        print("elapsed", op, "%.6f" % (time.monotonic() - started))
    print(ftp.quit())


if __name__ == "__main__":
    main(sys.argv[1:])
