//! Two `ftps-server` instances on one S3 bucket (moto's server) behind HAProxy (Debian's package), the way the README's
//! "Behind a load balancer" section sets it up: HAProxy balances control connections round robin with a PROXY
//! header (v2 to one instance, v1 to the other), and forwards each instance's own passive port range to it, with a
//! header too. curl connects from 127.0.0.5 to HAProxy on 127.0.0.3; both instances must see 127.0.0.5.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ftps_testkit::{peer, KillOnDrop, Moto, TempDir};

use crate::{random_bytes, run, PASSWORD, USER};

const CLIENT_IP: &str = "127.0.0.5";
const BALANCER_IP: &str = "127.0.0.3";

/// A passive range of five ports for instance `n` (0 or 1), below Linux's ephemeral ports and apart from other
/// test binaries' ranges.
fn passive_range(n: u16) -> (u16, u16) {
    let base = 24000 + (std::process::id() % 800) as u16 * 10 + n * 5;
    (base, base + 4)
}

fn start_instance(dir: &Path, users: &Path, s3: &str, n: u16, port: u16) -> KillOnDrop {
    let (first, last) = passive_range(n);
    let config = dir.join(format!("instance{n}.toml"));
    std::fs::write(
        &config,
        format!(
            "root = {root:?}\nstate_dir = {state:?}\nusers_file = {users:?}\n\n\
             [storage]\nbackend = \"s3\"\nendpoint = \"{s3}\"\nbucket = \"shared\"\nprefix = \"ftp\"\n\
             path_style = true\n\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\npassive_ports = \"{first}-{last}\"\n\
             passive_public_address = \"{BALANCER_IP}\"\n\n\
             [proxy_protocol]\ntrusted = [\"127.0.0.1/32\"]\nrequired = true\n",
            state = dir.join(format!("state{n}")),
            root = dir.join(format!("unused-root{n}")),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("instance{n}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", Moto::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", Moto::SECRET_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let running = KillOnDrop(child);
    assert!(
        wait_for(SocketAddr::from(([127, 0, 0, 1], port))),
        "instance {n} does not listen"
    );
    running
}

/// Waits until `addr` accepts, without opening a session there (a connect from 127.0.0.1 would be a trusted
/// proxy's, closed for want of a header; harmless, but it would show in the logs).
fn wait_for(addr: SocketAddr) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let listening = std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(3) == Some(&"0A")
                    && fields
                        .get(1)
                        .is_some_and(|local| local.ends_with(&format!(":{:04X}", addr.port())))
            });
        if listening {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn two_instances_behind_haproxy_see_the_client_address() {
    let Some(haproxy) = peer("haproxy") else {
        return;
    };
    let Some(curl_bin) = peer("curl") else {
        return;
    };
    let dir = TempDir::new("balancer");
    let Some(moto) = Moto::start() else {
        return;
    };
    let (_, bucket) = crate::moto_bucket(&moto, "shared");
    let users = dir.path().join("users.toml");
    crate::add_test_user(&users);
    let ports = [ftps_testkit::free_port(), ftps_testkit::free_port()];
    let _a = start_instance(dir.path(), &users, &moto.endpoint(), 0, ports[0]);
    let _b = start_instance(dir.path(), &users, &moto.endpoint(), 1, ports[1]);

    let front = ftps_testkit::free_port();
    let ((a_first, a_last), (b_first, b_last)) = (passive_range(0), passive_range(1));
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 200\n\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\n\
             frontend ftp\n  bind {BALANCER_IP}:{front}\n  default_backend instances\n\n\
             backend instances\n  balance roundrobin\n\
             \x20 server a 127.0.0.1:{pa} send-proxy-v2\n  server b 127.0.0.1:{pb} send-proxy\n\n\
             frontend passive_a\n  bind {BALANCER_IP}:{a_first}-{a_last}\n  default_backend passive_a\n\
             backend passive_a\n  server a 127.0.0.1 send-proxy-v2\n\n\
             frontend passive_b\n  bind {BALANCER_IP}:{b_first}-{b_last}\n  default_backend passive_b\n\
             backend passive_b\n  server b 127.0.0.1 send-proxy\n",
            pa = ports[0],
            pb = ports[1],
        ),
    )
    .unwrap();
    let haproxy_log = dir.path().join("haproxy.log");
    let _haproxy = KillOnDrop(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&haproxy_log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(format!("{BALANCER_IP}:{front}").parse().unwrap()),
        "haproxy does not listen: {}",
        std::fs::read_to_string(&haproxy_log).unwrap_or_default()
    );

    let url = |path: &str| format!("ftp://{BALANCER_IP}:{front}/{path}");
    let curl = || {
        let mut command = Command::new(&curl_bin);
        command
            .args(["-sS", "--ssl-reqd", "--insecure", "--max-time", "30"])
            .args(["--interface", CLIENT_IP])
            .args(["-u", &format!("{USER}:{PASSWORD}")]);
        command
    };
    let local = TempDir::new("balancer-local");
    let file = local.path().join("via-balancer.bin");
    let data = random_bytes(300_000, 9);
    std::fs::write(&file, &data).unwrap();
    // Round robin: the first connection goes to one instance (the upload, over EPSV), the second to the other
    // (the download over PASV, whose 227 names the balancer, then the listing).
    run(curl().arg("-T").arg(&file).arg(url("")));
    let down = local.path().join("down.bin");
    let listing = run(curl()
        .arg("--disable-epsv")
        .arg("-o")
        .arg(&down)
        .arg(url("via-balancer.bin"))
        .arg(url("")));
    assert_eq!(std::fs::read(&down).unwrap(), data);
    // The file is in the bucket, under the instances' prefix: neither instance kept it to itself.
    use ftps_server_smol::storage::Storage;
    let stored = futures_lite::future::block_on(bucket.metadata("/ftp/via-balancer.bin")).unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("via-balancer.bin"));

    let logs: Vec<String> = (0..2)
        .map(|n| {
            std::fs::read_to_string(dir.path().join(format!("instance{n}.log"))).unwrap_or_default()
        })
        .collect();
    let uploads: Vec<bool> = logs
        .iter()
        .map(|l| l.contains("direction=Upload"))
        .collect();
    let downloads: Vec<bool> = logs
        .iter()
        .map(|l| l.contains("direction=Download"))
        .collect();
    assert!(
        uploads[0] != uploads[1] && downloads[0] != downloads[1] && uploads != downloads,
        "the upload and the download were served by different instances: {logs:#?}"
    );
    for log in &logs {
        assert!(
            log.contains(&format!("peer={CLIENT_IP}:")),
            "an instance did not see the client's address: {log}"
        );
        assert!(
            !log.contains("peer=127.0.0.1:"),
            "an instance saw the balancer as the client: {log}"
        );
    }

    // Straight to an instance, not through the balancer: from another address it is refused without a word
    // (required), and from the trusted address a connection without a header is closed.
    for source in ["127.0.0.2", "127.0.0.1"] {
        let socket = socket2_connect(source, SocketAddr::from(([127, 0, 0, 1], ports[0])));
        let mut stream = socket;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(b"USER alice\r\n");
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        assert!(
            got.is_empty(),
            "{source}: the instance answered a connection that did not come through the balancer: {}",
            String::from_utf8_lossy(&got)
        );
    }
}

/// A TCP connection to `to` from the local address `from` (another loopback address is another client).
fn socket2_connect(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket
        .connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap();
    socket.into()
}
