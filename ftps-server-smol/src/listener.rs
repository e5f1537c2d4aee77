//! Passive-mode data listeners: a port from the configured range, bound on the control connection's local
//! address, and accepted connections checked against the control peer (PASV hijack protection, RFC 2577
//! section 3: the engine says who may connect, this module enforces it while it keeps waiting).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use smol::net::{TcpListener, TcpStream};

use crate::config::PortRange;

/// Hands out passive ports from a range, round-robin, so concurrent sessions rarely try the same port.
#[derive(Debug)]
pub struct PassivePorts {
    range: Option<PortRange>,
    next: AtomicUsize,
}

impl PassivePorts {
    /// Ports from `range`, or any free port (the OS's choice) when `None`.
    pub fn new(range: Option<PortRange>) -> Self {
        Self {
            range,
            next: AtomicUsize::new(0),
        }
    }

    /// Binds a listener on `ip` at the next free port of the range.
    ///
    /// Tries each port of the range at most once; fails with `AddrInUse` when all are taken.
    pub fn bind(&self, ip: IpAddr) -> io::Result<TcpListener> {
        let Some(range) = self.range else {
            return bind_std(SocketAddr::new(ip, 0));
        };
        let len = range.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..len {
            let offset = (start + i) % len;
            let Ok(offset) = u16::try_from(offset) else {
                continue;
            };
            let port = range.first.saturating_add(offset);
            match bind_std(SocketAddr::new(ip, port)) {
                Ok(listener) => {
                    self.next.store(start + i + 1, Ordering::Relaxed);
                    return Ok(listener);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free passive port in {}-{}", range.first, range.last),
        ))
    }
}

/// A bound passive listener, counted in the server's gauge (`Server::stats`) until it is dropped.
pub(crate) struct CountedListener {
    listener: TcpListener,
    gauge: Arc<AtomicUsize>,
}

impl CountedListener {
    /// Counts `listener` in `gauge` while it lives.
    pub(crate) fn new(listener: TcpListener, gauge: &Arc<AtomicUsize>) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self {
            listener,
            gauge: Arc::clone(gauge),
        }
    }
}

impl std::ops::Deref for CountedListener {
    type Target = TcpListener;

    fn deref(&self) -> &TcpListener {
        &self.listener
    }
}

impl Drop for CountedListener {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Binds without `SO_REUSEADDR` surprises: a plain std bind made async.
fn bind_std(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    TcpListener::try_from(listener)
}

/// Accepts connections until one comes from an allowed peer; others are closed at once.
///
/// Cancel-safe: dropping the future stops waiting. The caller bounds the wait (the engine's data-accept timeout).
pub async fn accept_from(
    listener: &TcpListener,
    allowed: impl Fn(IpAddr) -> bool,
) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        let (stream, peer) = listener.accept().await?;
        if allowed(peer.ip()) {
            stream.set_nodelay(true)?;
            return Ok((stream, peer));
        }
        tracing::warn!(%peer, "data connection from a foreign address refused (PASV hijack protection)");
        drop(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    // Test ranges stay below Linux's ephemeral ports (32768-60999): clients of other tests running at the same
    // time use those, and a range inside them failed with AddrInUse now and then.
    #[test]
    fn binds_inside_the_range_and_round_robins() {
        let base = 20000 + (std::process::id() % 1000) as u16 * 8;
        let ports = PassivePorts::new(Some(PortRange {
            first: base,
            last: base + 3,
        }));
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = ports.bind(ip).unwrap();
        let b = ports.bind(ip).unwrap();
        let pa = a.local_addr().unwrap().port();
        let pb = b.local_addr().unwrap().port();
        assert!((base..=base + 3).contains(&pa) && (base..=base + 3).contains(&pb));
        assert_ne!(pa, pb);
    }

    #[test]
    fn a_full_range_is_an_error() {
        let base = 29000 + (std::process::id() % 1000) as u16 * 2;
        let ports = PassivePorts::new(Some(PortRange {
            first: base,
            last: base,
        }));
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let _held = ports.bind(ip).unwrap();
        assert_eq!(ports.bind(ip).unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn foreign_peers_are_dropped_and_the_right_one_accepted() {
        smol::block_on(async {
            let ports = PassivePorts::new(None);
            let listener = ports.bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
            let addr = listener.local_addr().unwrap();
            let first = TcpStream::connect(addr).await.unwrap();
            let first_port = first.local_addr().unwrap().port();
            let second = TcpStream::connect(addr).await.unwrap();
            let second_port = second.local_addr().unwrap().port();
            // Pretend only the second connection's source is the control peer (same IP, so use a counter).
            let seen = std::cell::Cell::new(0);
            let (_stream, peer) = accept_from(&listener, |_| {
                seen.set(seen.get() + 1);
                seen.get() == 2
            })
            .await
            .unwrap();
            assert_eq!(seen.get(), 2);
            assert_eq!(peer.port(), second_port);
            assert_ne!(peer.port(), first_port);
        });
    }
}
