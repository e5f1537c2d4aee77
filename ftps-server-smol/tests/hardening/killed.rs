//! The real binary: `kill -9` mid-STOR keeps the previous file and the restart cleans up; its protocol log
//! follows the config.

use super::*;

/// The binary serving `dir/root` with its state in `dir/state`, on a port it picks.
fn start_binary(dir: &Path) -> (KillOnDrop, u16) {
    let passive = 20000 + (std::process::id() % 2000) as u16 * 10;
    ftps_testkit::start_ftps_server(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--passive-ports", &format!("{passive}-{}", passive + 9)])
            .stderr(Stdio::null()),
        WAIT,
    )
}

/// SIGKILL mid-STOR: the previous file is intact and not replaced by a partial one; the next start removes
/// the upload's temporary file.
#[test]
fn server_killed_mid_stor_keeps_the_previous_file_and_restart_cleans_temp_files() {
    let dir = TempDir::new("hardening-kill");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f.bin"), b"previous version").unwrap();
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["user", "add", USER, "--home", "/"])
            .env("FTPS_PASSWORD", PASSWORD)
            .stdout(Stdio::null()),
    );
    let (mut child, port) = start_binary(dir.path());
    let config = ftps_client_blocking::ClientConfig::new()
        .danger_accept_invalid_certs(true)
        .reply_timeout(Duration::from_secs(5))
        .data_timeout(Duration::from_secs(5))
        .abort_timeout(Duration::from_secs(1));
    let mut client = ftps_client_blocking::Client::connect("127.0.0.1", port, config).unwrap();
    client.login(USER, PASSWORD).unwrap();
    let mut upload = client.stor("f.bin").unwrap();
    upload.write_all(&random_bytes(4 << 20)).unwrap();
    upload.flush().unwrap();
    assert!(wait_until(WAIT, || !temp_files(&root).is_empty()));
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    drop(upload);
    drop(client);
    assert_eq!(
        std::fs::read(root.join("f.bin")).unwrap(),
        b"previous version"
    );
    let left = temp_files(&root);
    assert_eq!(left.len(), 1, "the killed upload's temp file: {left:?}");

    let (child, _) = start_binary(dir.path());
    let cleaned = temp_files(&root).is_empty();
    drop(child);
    assert!(
        cleaned,
        "temp files survived a restart: {:?}",
        temp_files(&root)
    );
    assert_eq!(
        std::fs::read(root.join("f.bin")).unwrap(),
        b"previous version"
    );
}

/// `[log] protocol` decides whether every command and reply is logged (`false` by default, as documented); the
/// transfer and session lines stay either way.
#[test]
fn the_protocol_log_follows_the_config() {
    for protocol in [false, true] {
        let dir = TempDir::new("protocol-log");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, format!("[log]\nprotocol = {protocol}\n")).unwrap();
        let stderr_path = dir.path().join("stderr");
        let port = ftps_testkit::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(ftps_testkit::wait_for_listener(addr, WAIT));
        let mut ctl = Control::connect(addr);
        assert!(ctl.reply().starts_with("220"));
        assert!(ctl.cmd("QUIT").starts_with("221"));
        assert!(wait_until(WAIT, || std::fs::read_to_string(&stderr_path)
            .unwrap()
            .contains("session closed")));
        child.kill().unwrap();
        child.wait().unwrap();
        let log = std::fs::read_to_string(&stderr_path).unwrap();
        assert_eq!(log.contains("ftps::protocol"), protocol, "{log}");
        assert!(log.contains("connected"), "{log}");
    }
}
