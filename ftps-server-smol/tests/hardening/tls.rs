//! TLS: versions below 1.2 and renegotiation refused (checked with openssl), a stalled handshake timed out.

use super::*;

/// No TLS 1.1 or 1.0 (SSL 3 is not even compiled into OpenSSL 3 clients): the server answers a protocol_version
/// alert. TLS 1.2 from the same client succeeds, so the refusal is the server's.
#[test]
fn tls_below_1_2_is_refused_openssl() {
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let server = TestServer::start(Setup::tls());
    let attempt = |version: &str| -> (bool, String) {
        let mut child = Command::new(&openssl)
            .args([
                "s_client",
                "-connect",
                &server.addr.to_string(),
                "-starttls",
                "ftp",
            ])
            .args([
                "-servername",
                "localhost",
                version,
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (ok, out) = wait_output(&mut child, WAIT);
        (ok, out)
    };
    for version in ["-tls1", "-tls1_1"] {
        let (ok, out) = attempt(version);
        assert!(!ok, "{version} was accepted:\n{out}");
        // rustls answers an offer without TLS 1.2+ with a handshake_failure alert (40).
        assert!(
            out.contains("SSL alert number") && out.contains("Cipher is (NONE)"),
            "{version}: not refused by the server:\n{out}"
        );
    }
    let (ok, out) = attempt("-tls1_2");
    assert!(ok && out.contains("TLSv1.2"), "TLS 1.2 failed:\n{out}");
}

/// No renegotiation (the TLS 1.2 renegotiation attacks, CVE-2009-3555 and client-initiated DoS): a client
/// that asks to renegotiate the control connection is refused by the server (rustls has no renegotiation).
#[test]
fn tls_renegotiation_is_refused_openssl() {
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let mut setup = Setup::tls();
    setup.session.login_timeout = Duration::from_secs(2);
    let server = TestServer::start(setup);
    let mut child = Command::new(&openssl)
        .args([
            "s_client",
            "-connect",
            &server.addr.to_string(),
            "-starttls",
            "ftp",
        ])
        .args(["-servername", "localhost", "-tls1_2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // s_client's interactive command "R": renegotiate (TLS 1.2 only). stdin stays open (EOF would quit), so
    // s_client ends when the server closes: at the refusal, or at the latest at the login timeout.
    let _ = stdin.write_all(b"R\n");
    let _ = stdin.flush();
    let (_, out) = wait_output(&mut child, WAIT);
    drop(stdin);
    assert!(
        out.contains("RENEGOTIATING"),
        "no renegotiation attempted:\n{out}"
    );
    eprintln!("renegotiation attempt:\n{out}");
    assert!(
        out.contains("no renegotiation"),
        "renegotiation was not refused:\n{out}"
    );
}

/// Waits for a child up to `timeout` (killing it then): success and stdout + stderr.
fn wait_output(child: &mut Child, timeout: Duration) -> (bool, String) {
    let finished = wait_until(timeout, || child.try_wait().ok().flatten().is_some());
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    (finished && status.success(), out)
}

/// A TLS handshake that stalls after AUTH TLS is ended by the login timeout.
#[test]
fn a_stalled_tls_handshake_times_out() {
    let mut setup = Setup::tls();
    setup.session.login_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    assert!(ctl.cmd("AUTH TLS").starts_with("234"));
    let started = Instant::now();
    assert!(ctl.closed_within(Duration::from_secs(4)));
    assert!(started.elapsed() < Duration::from_secs(4));
    server.assert_released();
}
