#!/usr/bin/env python3
"""Drive an FTPS server with Python's ftplib, for the interop tests.

Stock ``ftplib.FTP_TLS`` opens every data connection with a fresh TLS session, so a server that requires data
connections to resume the control session (vsftpd's ``require_ssl_reuse=YES``, ftps-server's default) refuses it:
that is expected. ``ReusingFTP_TLS`` is the small subclass that makes ftplib reuse the control connection's TLS
session on its data connections, as RFC 4217 section 10.2 and every serious client (curl, lftp, FileZilla) do.

Usage: ftplib_client.py [--stock] [--tls12] HOST PORT USER PASSWORD CAFILE STEP...
Steps: ``put:LOCAL:REMOTE``, ``get:REMOTE:LOCAL``, ``list``, ``nlst``, ``mlsd``, ``mkd:DIR``, ``del:REMOTE``,
``size:REMOTE``. Prints one line per step; exits non-zero on the first failure.
"""

import ftplib
import ssl
import sys


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


def main(argv):
    stock = "--stock" in argv
    tls12 = "--tls12" in argv
    args = [a for a in argv if not a.startswith("--")]
    host, port, user, password, cafile, *steps = args
    context = ssl.create_default_context(cafile=cafile)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    cls = ftplib.FTP_TLS if stock else ReusingFTP_TLS
    ftp = cls(context=context, timeout=20)
    ftp.connect(host, int(port))
    ftp.auth()
    ftp.login(user, password)
    ftp.prot_p()
    print("tls", ftp.sock.version())
    for step in steps:
        op, *rest = step.split(":")
        if op == "put":
            with open(rest[0], "rb") as f:
                print(ftp.storbinary("STOR " + rest[1], f, blocksize=65536))
        elif op == "get":
            with open(rest[1], "wb") as f:
                print(ftp.retrbinary("RETR " + rest[0], f.write, blocksize=65536))
        elif op == "list":
            lines = []
            print(ftp.retrlines("LIST", lines.append))
            for line in lines:
                print("list", line)
        elif op == "nlst":
            for name in ftp.nlst():
                print("nlst", name)
        elif op == "mlsd":
            for name, facts in ftp.mlsd():
                print("mlsd", name, facts.get("type"), facts.get("size"))
        elif op == "mkd":
            print(ftp.mkd(rest[0]))
        elif op == "del":
            print(ftp.delete(rest[0]))
        elif op == "size":
            print("size", ftp.size(rest[0]))
        else:
            raise SystemExit("unknown step " + step)
    print(ftp.quit())


if __name__ == "__main__":
    main(sys.argv[1:])
