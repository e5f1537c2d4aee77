//! Encryption at rest, keys (issue 17), against the real binary: `--encrypt` makes a private KEK on first start,
//! and `keys rotate` re-wraps the data keys under a new KEK that the restarted server opens.
//!
//! A module of `hardening.rs` rather than a test binary of its own: linking one more binary is the slow part.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use ftps_server_smol::keys::{EncryptionConfig, Keyring, KEYS_DIR};
use ftps_testkit::{KillOnDrop, TempDir};

use super::{run_ok, PASSWORD, USER, WAIT};

/// Runs `ftps-server --encrypt` on a port it picks; returns the child and the port once it listens.
fn start_encrypted(dir: &Path) -> (KillOnDrop, u16) {
    ftps_testkit::start_ftps_server(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--encrypt")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", "127.0.0.1:0"])
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap()),
        WAIT,
    )
}

fn login(port: u16) {
    let config = ftps_client_blocking::ClientConfig::new()
        .danger_accept_invalid_certs(true)
        .reply_timeout(WAIT);
    let mut client = ftps_client_blocking::Client::connect("127.0.0.1", port, config).unwrap();
    client.login(USER, PASSWORD).unwrap();
}

/// Kills the server and waits for it.
fn stop(child: KillOnDrop) {
    drop(child);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn encrypt_makes_a_private_kek_and_keys_rotate_rewraps_what_the_restarted_server_opens() {
    let dir = TempDir::new("keys-binary");
    let state = dir.path().join("state");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--state-dir")
            .arg(&state)
            .args(["user", "add", USER, "--home", "/"])
            .env("FTPS_PASSWORD", PASSWORD)
            .stdout(Stdio::null()),
    );
    let (child, port) = start_encrypted(dir.path());
    let kek_path = state.join("kek");
    assert_eq!(mode(&kek_path), 0o600);
    let kek = std::fs::read_to_string(&kek_path).unwrap();
    assert!(kek.trim_end().len() == 64 && kek.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
    login(port);
    stop(child);

    // The first login made the user's key file.
    let config = EncryptionConfig {
        enabled: true,
        ..EncryptionConfig::default()
    };
    let data_key = Keyring::from_config(&config, &state)
        .unwrap()
        .existing_data_key(USER)
        .unwrap()
        .expect("the login made alice's data key");
    let key_file = state.join(KEYS_DIR).join(format!("{}.key", "616c696365")); // hex("alice")
    let wrapped = std::fs::read(&key_file).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
        .arg("--state-dir")
        .arg(&state)
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("re-wrapped 1 data key"), "{stdout}");
    assert_ne!(
        std::fs::read_to_string(&kek_path).unwrap(),
        kek,
        "the KEK file did not change"
    );
    assert_eq!(mode(&kek_path), 0o600);
    assert_ne!(
        std::fs::read(&key_file).unwrap(),
        wrapped,
        "the key file was not re-wrapped"
    );
    assert_eq!(mode(&key_file), 0o600);

    let (child, port) = start_encrypted(dir.path());
    login(port);
    stop(child);
    let reopened = Keyring::from_config(&config, &state).unwrap();
    assert_eq!(reopened.existing_data_key(USER).unwrap(), Some(data_key));

    // A KEK file others may read stops the start, with the fix in the message.
    std::fs::set_permissions(&kek_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
        .arg("--encrypt")
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("chmod 600"),
        "{stderr}"
    );
}
