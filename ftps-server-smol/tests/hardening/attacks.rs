//! Attacks refused: bounce, PASV hijack, another session's TLS ticket, pipelining after AUTH TLS, USER before
//! TLS, path escapes, symlink races, brute force.

use super::*;

/// RFC 2577 section 3: PORT/EPRT to a third host or to a privileged port is refused before any connection.
#[test]
fn bounce_port_to_another_address_or_privileged_port_is_refused_without_connecting() {
    let server = TestServer::start(Setup::plain());
    // A would-be victim on another loopback address: it must never see a connection.
    let victim = std::net::TcpListener::bind((SECOND_IP, 0)).unwrap();
    victim.set_nonblocking(true).unwrap();
    let port = victim.local_addr().unwrap().port();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let (hi, lo) = (port >> 8, port & 0xff);
    assert!(ctl
        .cmd(&format!("PORT 127,0,0,2,{hi},{lo}"))
        .starts_with("504"));
    assert!(ctl
        .cmd(&format!("EPRT |1|127.0.0.2|{port}|"))
        .starts_with("504"));
    // The control peer itself, but a privileged port (an SMTP or FTP server on the same host).
    assert!(ctl.cmd("PORT 127,0,0,1,0,25").starts_with("504"));
    assert!(ctl.cmd("EPRT |1|127.0.0.1|21|").starts_with("504"));
    // A transfer now has no data address to go to.
    let reply = ctl.cmd("LIST");
    assert!(
        !reply.starts_with('1') && !reply.starts_with('2'),
        "{reply}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        victim.accept().map(|_| ()).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "the server connected to the bounce target"
    );
}

/// RFC 2577 section 3 (PASV hijack): a foreign IP's connection to the passive port is dropped, and the
/// listener keeps waiting for the control peer, who then gets the listing.
#[test]
fn pasv_connection_from_another_ip_is_dropped_and_the_client_still_connects() {
    let server = TestServer::start(Setup::plain());
    std::fs::write(server.root.join("visible.txt"), b"x").unwrap();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let mut thief = connect_from(SECOND_IP.into(), data);
    let mut stolen = Vec::new();
    let started = Instant::now();
    let _ = thief.read_to_end(&mut stolen); // EOF or reset, not the 5 s read timeout
    assert!(stolen.is_empty(), "a foreign peer got data: {stolen:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the foreign connection was not closed"
    );
    let mut own = with_timeouts(TcpStream::connect_timeout(&data, WAIT).unwrap());
    let mut listing = String::new();
    own.read_to_string(&mut listing).unwrap();
    drop(own); // a client closes its end after the EOF; the server waits for it before 226
    assert!(listing.contains("visible.txt"), "{listing}");
    assert!(ctl.reply().starts_with('1')); // 125 or 150
    let reply = ctl.reply();
    assert!(reply.starts_with("226"), "{reply}");
}

/// With only foreign connections, the transfer fails at the accept timeout (425), nothing is sent.
#[test]
fn pasv_with_only_foreign_connections_ends_in_425_at_the_accept_timeout() {
    let mut setup = Setup::plain();
    setup.session.data_accept_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let started = Instant::now();
    for _ in 0..3 {
        let mut thief = connect_from(SECOND_IP.into(), data);
        let mut stolen = Vec::new();
        let _ = thief.read_to_end(&mut stolen);
        assert!(stolen.is_empty());
    }
    let reply = ctl.reply();
    assert!(reply.starts_with("425"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Under the default policy a data connection whose TLS session is not a resumption of this control session
/// (a thief who knows the port and comes from the right IP, e.g. behind the same NAT) is refused.
#[test]
fn tls_data_connection_not_resuming_this_session_is_refused() {
    let server = TestServer::start(Setup::tls());
    let config = server.client_tls();
    let mut ctl = Control::connect(server.addr);
    ctl.tls_login(&config);
    // The thief: right IP, right port, its own TLS session.
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let stranger = server.client_tls();
    let (mut stream, _) = tls_data(data, &stranger);
    let mut stolen = Vec::new();
    let _ = stream.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "a foreign TLS session got data");
    let mut reply = ctl.reply();
    if reply.starts_with('1') {
        reply = ctl.reply();
    }
    assert!(reply.starts_with("522"), "{reply}");
    // The owner, resuming the control session, is served: the refusal above was about the session.
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let (mut stream, handshake) = tls_data(data, &config);
    handshake.unwrap();
    let mut listing = Vec::new();
    stream.read_to_end(&mut listing).unwrap();
    stream.conn.send_close_notify(); // both ends send close_notify (DESIGN.md)
    stream.flush().unwrap();
    drop(stream);
    assert!(ctl.reply().starts_with('1')); // 125 or 150
    let reply = ctl.reply();
    assert!(reply.starts_with("226"), "{reply}");
}

/// A TLS 1.2-only client config trusting the test certificate (Go's TLS 1.2 resumes with tickets only).
fn client_tls12(cert: &TestCert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone().into()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// `LIST` on `ctl` over a data connection whose TLS client uses `config` (so it offers the ticket that config's
/// store holds): the listing and the final reply, or no data and the refusal.
fn list_with(ctl: &mut Control, config: &Arc<rustls::ClientConfig>) -> (Vec<u8>, String) {
    command_with(ctl, config, "LIST")
}

/// `command` (a listing or `RETR`) on `ctl` over a data connection whose TLS client uses `config`: the bytes
/// received and the final reply, or no data and the refusal.
pub(crate) fn command_with(
    ctl: &mut Control,
    config: &Arc<rustls::ClientConfig>,
    command: &str,
) -> (Vec<u8>, String) {
    let data = ctl.epsv();
    ctl.send(format!("{command}\r\n").as_bytes());
    let (mut stream, handshake) = tls_data(data, config);
    let mut received = Vec::new();
    if handshake.is_ok() {
        let _ = stream.read_to_end(&mut received);
        stream.conn.send_close_notify();
        let _ = stream.flush();
    }
    drop(stream);
    let mut reply = ctl.reply();
    if reply.starts_with('1') {
        reply = ctl.reply();
    }
    (received, reply)
}

/// A data connection offering a ticket of *another user's* control session, from the same address, is refused
/// (522) and gets nothing: tickets vouch only for their user's logins.
#[test]
fn a_data_connection_with_another_users_ticket_is_refused() {
    let server = TestServer::start(Setup::tls());
    std::fs::write(server.root.join("secret.txt"), b"alice's").unwrap();
    let (alice_tls, bob_tls) = (server.client_tls(), server.client_tls());
    let mut alice = Control::connect(server.addr);
    alice.tls_login(&alice_tls);
    let mut bob = Control::connect(server.addr);
    bob.tls_login_as(&bob_tls, OTHER_USER);
    assert!(bob.cmd("NOOP").starts_with("200")); // bob's client has read its tickets
    let (stolen, reply) = list_with(&mut alice, &bob_tls);
    assert!(stolen.is_empty(), "bob's ticket got alice's listing");
    assert!(
        reply.starts_with("522") && reply.contains("resume"),
        "{reply}"
    );
    let (listing, reply) = list_with(&mut alice, &alice_tls);
    assert!(String::from_utf8_lossy(&listing).contains("secret.txt"));
    assert!(reply.starts_with("226"), "{reply}");
}

/// Go (rclone) keeps one ticket cache for all its control connections: a data connection offering a ticket of
/// another control session of the *same user and address* is served under the default scope, TLS 1.2 (tickets
/// only) and 1.3; `ResumptionScope::Session` refuses it.
#[test]
fn another_session_of_the_same_user_may_lend_its_ticket_unless_the_scope_is_one_session() {
    for scope in [ResumptionScope::User, ResumptionScope::Session] {
        let server = TestServer::start(Setup {
            session: SessionConfig {
                data_resumption_scope: scope,
                ..SessionConfig::default()
            },
            ..Setup::tls()
        });
        for tls12 in [false, true] {
            let config = |server: &TestServer| {
                if tls12 {
                    client_tls12(&server.cert)
                } else {
                    server.client_tls()
                }
            };
            let (one_tls, two_tls) = (config(&server), config(&server));
            let mut one = Control::connect(server.addr);
            one.tls_login(&one_tls);
            let mut two = Control::connect(server.addr);
            two.tls_login(&two_tls);
            assert!(two.cmd("NOOP").starts_with("200"));
            let (_, reply) = list_with(&mut one, &two_tls);
            let expected = if scope == ResumptionScope::User {
                "226"
            } else {
                "522"
            };
            assert!(
                reply.starts_with(expected),
                "{scope:?}, TLS 1.2 only: {tls12}: {reply}"
            );
        }
    }
}

/// A new control connection's ticket reaches a shared client cache before that connection has logged in: a
/// data connection offering it waits (no answer to its ClientHello) until the login is decided, then is served
/// when it was the same user and refused (522) when it was another.
#[test]
fn a_ticket_of_a_session_still_logging_in_waits_for_its_login() {
    let server = TestServer::start(Setup::tls());
    std::fs::write(server.root.join("listed.txt"), b"x").unwrap();
    for (login, expected) in [(USER, "226"), (OTHER_USER, "522")] {
        let (alice_tls, new_tls) = (server.client_tls(), server.client_tls());
        let mut alice = Control::connect(server.addr);
        alice.tls_login(&alice_tls);
        // The new connection: TLS up (its tickets read with the reply to FEAT), not logged in.
        let mut newcomer = Control::connect(server.addr);
        assert!(newcomer.reply().starts_with("220"));
        newcomer.auth_tls(&new_tls);
        assert!(newcomer.cmd("FEAT").starts_with("211"));
        let data = alice.epsv();
        alice.send(b"LIST\r\n");
        let handshake = std::thread::spawn(move || {
            let (mut stream, handshake) = tls_data(data, &new_tls);
            let mut listing = Vec::new();
            if handshake.is_ok() {
                let _ = stream.read_to_end(&mut listing);
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
            listing
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!handshake.is_finished(), "answered before the login");
        newcomer.login_as(login);
        let listing = handshake.join().unwrap();
        let mut reply = alice.reply();
        if reply.starts_with('1') {
            reply = alice.reply();
        }
        assert!(reply.starts_with(expected), "{login}: {reply}");
        assert_eq!(listing.is_empty(), expected == "522", "{login}");
    }
}

/// CVE-2011-0411 class: commands pipelined after AUTH TLS in the same packet are never executed.
#[test]
fn commands_pipelined_after_auth_tls_are_never_executed() {
    let server = TestServer::start(Setup::tls());
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    ctl.send(format!("AUTH TLS\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes());
    assert!(ctl.line().unwrap().starts_with("234"));
    // What follows is TLS (an alert: the "ClientHello" was plain text), never an FTP reply.
    let mut rest = Vec::new();
    let _ = ctl.tcp.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("331") && !rest.contains("230"), "{rest}");
    assert_eq!(server.attempts.load(Ordering::SeqCst), 0);
    server.assert_released();
}

/// RFC 4217 section 4 / policy: no USER or PASS before TLS when TLS is required; the password is never checked.
#[test]
fn user_and_pass_before_tls_are_refused() {
    let server = TestServer::start(Setup::tls());
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    assert!(ctl.cmd(&format!("USER {USER}")).starts_with("530"));
    assert!(ctl.cmd(&format!("PASS {PASSWORD}")).starts_with("530"));
    assert_eq!(server.attempts.load(Ordering::SeqCst), 0);
}

/// Path escapes: `..`, absolute paths, backslashes, NUL, overlong components and symlinks out of the root all
/// fail, and nothing outside the root is read, listed, created, renamed or deleted.
#[test]
fn paths_cannot_escape_the_root() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start(Setup::plain());
    let outside = server.base.path();
    std::fs::write(outside.join("secret"), b"SECRET").unwrap();
    std::fs::create_dir(outside.join("secret-dir")).unwrap();
    symlink(outside.join("secret"), server.root.join("abs-link")).unwrap();
    symlink("../secret", server.root.join("rel-link")).unwrap();
    symlink("..", server.root.join("up")).unwrap();
    symlink(outside.join("secret-dir"), server.root.join("dir-link")).unwrap();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let long = "x".repeat(300);
    for path in [
        "../secret",
        "/../secret",
        "../../../../../../etc/passwd",
        "..\\secret",
        "\\..\\secret",
        "abs-link",
        "rel-link",
        "up/secret",
        "dir-link/../secret",
        long.as_str(),
    ] {
        let reply = ctl.cmd(&format!("SIZE {path}"));
        assert!(!reply.starts_with('2'), "SIZE {path}: {reply}");
        let reply = ctl.cmd(&format!("MKD {path}-new"));
        assert!(!reply.starts_with('2') || !outside.join("secret-new").exists());
    }
    // NUL inside a path (RFC 959 paths are text; the codec refuses it).
    ctl.send(b"SIZE ../se\0cret\r\n");
    assert!(!ctl.reply().starts_with('2'));
    // Changing into an escaping link, then using relative names, stays inside.
    let reply = ctl.cmd("CWD up");
    assert!(!reply.starts_with('2') || !ctl.cmd("SIZE secret").starts_with('2'));
    let reply = ctl.cmd("CWD dir-link");
    assert!(!reply.starts_with('2') || !ctl.cmd("MKD planted").starts_with('2'));
    ctl.cmd("CWD /");
    // Mutations through the links.
    assert!(!ctl.cmd("DELE rel-link/../secret").starts_with('2'));
    assert!(!ctl.cmd("RMD ../secret-dir").starts_with('2'));
    if ctl.cmd("RNFR ../secret").starts_with('3') {
        assert!(!ctl.cmd("RNTO stolen").starts_with('2'));
    }
    assert!(!ctl.cmd("MKD dir-link/planted").starts_with('2'));
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"SECRET");
    assert!(!outside.join("secret-dir/planted").exists());
    assert!(!outside.join("secret-new").exists());
    assert!(!server.root.join("stolen").exists());
    // Opening through a link: the data connection carries nothing from outside.
    for path in ["abs-link", "rel-link", "up/secret"] {
        ctl.epsv();
        ctl.send(format!("RETR {path}\r\n").as_bytes());
        let reply = ctl.reply();
        assert!(!reply.starts_with('1'), "RETR {path}: {reply}");
    }
}

/// Check/use races: while a directory in the root is swapped again and again with a symlink to a directory
/// outside, SIZE and RETR of a file in it never reach the outside file (every open is relative to the root
/// directory handle, cap-std `openat` beneath the root, so there is no separate check to race).
#[test]
fn symlink_swap_races_cannot_escape_the_root() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start(Setup::plain());
    let outside = server.base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("f.txt"), b"OUTSIDE!").unwrap(); // 8 bytes
    std::fs::create_dir(server.root.join("d")).unwrap();
    std::fs::write(server.root.join("d/f.txt"), b"inside").unwrap(); // 6 bytes
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, outside, stop) = (server.root.clone(), outside.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(root.join("d"), root.join("d.real")).unwrap();
                symlink(&outside, root.join("d")).unwrap();
                std::fs::remove_file(root.join("d")).unwrap();
                std::fs::rename(root.join("d.real"), root.join("d")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let (mut inside, mut refused) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let reply = ctl.cmd("SIZE d/f.txt");
        assert_ne!(reply, "213 8", "SIZE reached the outside file");
        if reply == "213 6" {
            inside += 1;
        } else {
            refused += 1;
        }
        let data = ctl.epsv();
        let mut stream = with_timeouts(TcpStream::connect_timeout(&data, WAIT).unwrap());
        let reply = ctl.cmd("RETR d/f.txt");
        if reply.starts_with('1') {
            let mut body = Vec::new();
            let _ = stream.read_to_end(&mut body);
            drop(stream);
            assert_ne!(body, b"OUTSIDE!", "RETR read the outside file");
            assert!(!ctl.reply().is_empty());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("symlink swap race: {swaps} swaps; SIZE inside {inside}, refused {refused}");
    assert!(swaps > 10, "the race did not run");
}

/// Brute force: failed logins are delayed, an IP is locked out after N failures in the window, and the
/// lockout does not hit another IP; the password appears in no log line.
#[test]
fn failed_logins_are_delayed_and_lock_out_only_the_attacking_ip() {
    let mut setup = Setup::plain();
    setup.session.failed_login_delay = Duration::from_millis(300);
    setup.session.max_failed_logins = 10;
    setup.throttle = Some(Arc::new(LoginThrottle::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(60),
        100,
    )));
    let server = TestServer::start(setup);
    let mut attacker = Control::connect_from(SECOND_IP, server.addr);
    assert!(attacker.reply().starts_with("220"));
    for n in 0..3 {
        assert!(attacker.cmd(&format!("USER {USER}")).starts_with("331"));
        let started = Instant::now();
        let reply = attacker.cmd(&format!("PASS wrong-guess-{n}"));
        assert!(reply.starts_with("530"), "{reply}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "not delayed"
        );
    }
    // Locked: even the right password is refused without asking the authenticator.
    assert!(attacker.cmd(&format!("USER {USER}")).starts_with("331"));
    assert!(attacker.cmd(&format!("PASS {PASSWORD}")).starts_with("530"));
    assert_eq!(server.attempts.load(Ordering::SeqCst), 3);
    let mut again = Control::connect_from(SECOND_IP, server.addr);
    let reply = again.reply();
    assert!(reply.starts_with("421"), "{reply}");
    // Everyone else still logs in.
    let mut user = Control::connect(server.addr);
    user.plain_login();
    let log = captured_log();
    assert!(log.contains("locked out"), "the log capture works");
    assert!(log.contains("> PASS"), "the protocol log is captured");
    for secret in [PASSWORD, "wrong-guess-0", "wrong-guess-1", "wrong-guess-2"] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}
