//! Resource exhaustion: lines without CRLF, slow and idle clients, the per-IP cap, passive listeners per
//! session, a client that never reads.

use super::*;

/// A line without CRLF is discarded at the limit, answered once, and the session goes on.
#[test]
fn a_line_without_crlf_is_bounded() {
    let mut setup = Setup::plain();
    setup.session.max_line_len = 512;
    let server = TestServer::start(setup);
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    ctl.send(&vec![b'A'; 1 << 20]);
    ctl.send(b"\r\nNOOP\r\n");
    let reply = ctl.reply();
    assert!(reply.starts_with("500"), "{reply}");
    assert!(ctl.reply().starts_with("200"));
}

/// Slow loris before login (a byte every 200 ms) hits the login timeout; a silent logged-in client the idle
/// timeout. Both get 421 and a close.
#[test]
fn slow_and_idle_clients_are_timed_out() {
    let mut setup = Setup::plain();
    setup.session.login_timeout = Duration::from_secs(1);
    setup.session.idle_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let mut loris = Control::connect(server.addr);
    assert!(loris.reply().starts_with("220"));
    let mut drip = loris.tcp.try_clone().unwrap();
    let started = Instant::now();
    let dripping = std::thread::spawn(move || {
        for byte in b"USER alice-with-a-very-long-name" {
            if drip.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let reply = loris.reply();
    assert!(reply.starts_with("421"), "{reply}");
    assert!(loris.closed_within(Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_secs(4));
    dripping.join().unwrap();

    let mut idle = Control::connect(server.addr);
    idle.plain_login();
    let started = Instant::now();
    assert!(idle.reply().starts_with("421"));
    assert!(idle.closed_within(Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_secs(4));
    server.assert_released();
}

/// Many idle sessions from one IP: with a per-IP cap of 5, 20 connections give 5 sessions and 15 refusals.
#[test]
fn the_per_ip_cap_holds_against_many_connections() {
    let mut setup = Setup::plain();
    setup.limits.max_sessions_per_ip = 5;
    let server = TestServer::start(setup);
    let mut open = Vec::new();
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..20 {
        let mut ctl = Control::connect(server.addr);
        let reply = ctl.reply();
        if reply.starts_with("220") {
            admitted += 1;
            open.push(ctl);
        } else {
            assert!(reply.starts_with("421"), "{reply}");
            assert!(ctl.closed_within(Duration::from_secs(3)));
            refused += 1;
        }
    }
    assert_eq!((admitted, refused), (5, 15));
    assert_eq!(server.stats().sessions, 5);
    // Another IP is not affected by this one's cap.
    let mut other = Control::connect_from(SECOND_IP, server.addr);
    assert!(other.reply().starts_with("220"));
    drop(other);
    drop(open);
    server.assert_released();
}

/// Opening passive listeners in a loop: one listener per session, whatever the count of PASV/EPSV.
#[test]
fn one_passive_listener_per_session() {
    let server = TestServer::start(Setup::plain());
    let mut first = Control::connect(server.addr);
    first.plain_login();
    for _ in 0..100 {
        first.epsv();
    }
    assert_eq!(server.stats().passive_listeners, 1);
    let mut second = Control::connect(server.addr);
    second.plain_login();
    for _ in 0..20 {
        assert!(second.cmd("PASV").starts_with("227"));
    }
    let stats = server.stats();
    assert_eq!((stats.sessions, stats.passive_listeners), (2, 2));
    first.vanish();
    second.vanish();
    server.assert_released();
}

/// A client that sends commands but never reads the replies: the server stops reading once its bounded queues
/// are full, its write times out, and the session is closed; memory stays flat meanwhile.
#[test]
fn a_client_that_never_reads_is_timed_out_with_bounded_memory() {
    let mut setup = Setup::plain();
    setup.limits.write_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&server.addr.into(), WAIT).unwrap();
    let mut ctl = Control::over(with_timeouts(socket.into()));
    ctl.plain_login();
    let rss_before = rss_kib();
    let _ = ctl.tcp.set_write_timeout(Some(Duration::from_millis(500)));
    let chunk = b"HELP\r\n".repeat(10_000);
    let started = Instant::now();
    let mut sent = 0usize;
    // Writes stop succeeding once the server stops reading; bounded by WAIT in any case.
    while started.elapsed() < WAIT {
        match ctl.tcp.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        started.elapsed() < WAIT,
        "the server kept reading {sent} bytes of commands nobody reads the replies to"
    );
    server.assert_released();
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!("never-reading client: {sent} bytes of HELP sent before the server stopped reading; RSS +{grown} KiB");
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
}
