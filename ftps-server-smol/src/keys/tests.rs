use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::rotate::rotate_until;
use super::*;

fn config() -> EncryptionConfig {
    EncryptionConfig {
        enabled: true,
        ..EncryptionConfig::default()
    }
}

fn read_kek(path: &Path) -> Kek {
    KekSource::KekFile(path.to_owned())
        .load(Duration::from_secs(1))
        .unwrap()
}

/// Data keys of `n` users, made through a configured keyring.
fn make_users(state: &Path, n: usize) -> Vec<(String, [u8; 32])> {
    let keyring = Keyring::from_config(&config(), state).unwrap();
    (0..n)
        .map(|i| {
            let user = format!("user{i}");
            let key = keyring.data_key(&user).unwrap();
            (user, key)
        })
        .collect()
}

fn assert_keys(keyring: &Keyring, users: &[(String, [u8; 32])]) {
    for (user, key) in users {
        assert_eq!(
            keyring.existing_data_key(user).unwrap(),
            Some(*key),
            "{user}"
        );
    }
}

#[test]
fn a_key_is_created_once_cached_and_stable_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::from_config(&config(), dir.path()).unwrap();
    assert_eq!(keyring.existing_data_key("alice").unwrap(), None);
    assert!(
        keyring.users().unwrap().is_empty(),
        "a look-up created a key"
    );
    let key = keyring.data_key("alice").unwrap();
    assert_eq!(keyring.data_key("alice").unwrap(), key);
    assert_ne!(keyring.data_key("bob").unwrap(), key);
    assert_eq!(keyring.users().unwrap(), ["alice", "bob"]);
    let path = key_path(&dir.path().join(KEYS_DIR), "alice").unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let again = Keyring::from_config(&config(), dir.path()).unwrap();
    assert_eq!(again.existing_data_key("alice").unwrap(), Some(key));
}

#[test]
fn concurrent_first_use_ends_with_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::generate().unwrap();
    // Two keyrings stand for two processes (no shared cache); two threads each.
    let keyrings: Vec<_> = (0..2)
        .map(|_| Arc::new(Keyring::open(dir.path(), kek.clone()).unwrap()))
        .collect();
    for round in 0..20 {
        let user = format!("u{round}");
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (keyring, barrier, user) = (
                    Arc::clone(&keyrings[i % 2]),
                    Arc::clone(&barrier),
                    user.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    keyring.data_key(&user).unwrap()
                })
            })
            .collect();
        let keys: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            keys.windows(2).all(|w| w[0] == w[1]),
            "round {round}: two keys"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 20, "temp files left");
}

#[test]
fn a_wrong_kek_is_named_as_such_and_never_replaced_by_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let users = make_users(dir.path(), 2);
    let keys = dir.path().join(KEYS_DIR);
    let wrong = Keyring::open(&keys, Kek::generate().unwrap()).unwrap();
    for user in ["user0", "user1"] {
        let err = wrong.data_key(user).unwrap_err().to_string();
        assert!(
            err.contains("unknown KEK") || err.contains("fingerprint"),
            "{err}"
        );
    }
    // A server started with the wrong KEK file refuses to start.
    let kek_path = dir.path().join("kek");
    let right = std::fs::read(&kek_path).unwrap();
    std::fs::write(
        &kek_path,
        format!("{}\n", Kek::generate().unwrap().to_hex()),
    )
    .unwrap();
    let err = Keyring::from_config(&config(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong kek_file"), "{err}");
    // The files are untouched: the right KEK still opens them.
    std::fs::write(&kek_path, right).unwrap();
    assert_keys(
        &Keyring::from_config(&config(), dir.path()).unwrap(),
        &users,
    );
}

#[test]
fn a_tampered_truncated_or_moved_key_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::generate().unwrap();
    let keyring = || Keyring::open(dir.path(), kek.clone()).unwrap();
    keyring().data_key("alice").unwrap();
    let alice = key_path(dir.path(), "alice").unwrap();
    let good = std::fs::read(&alice).unwrap();

    let mut flipped = good.clone();
    flipped[40] ^= 1;
    std::fs::write(&alice, &flipped).unwrap();
    let err = keyring().data_key("alice").unwrap_err().to_string();
    assert!(err.contains("integrity"), "{err}");
    assert_eq!(
        std::fs::read(&alice).unwrap(),
        flipped,
        "replaced by a new key"
    );

    std::fs::write(&alice, &good[..50]).unwrap();
    let err = keyring().data_key("alice").unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");

    std::fs::write(key_path(dir.path(), "mallory").unwrap(), &good).unwrap();
    let err = keyring().data_key("mallory").unwrap_err().to_string();
    assert!(err.contains("another user"), "{err}");
}

#[test]
fn rotation_keeps_every_data_key_and_retires_the_old_kek() {
    let dir = tempfile::tempdir().unwrap();
    let users = make_users(dir.path(), 5);
    let kek_path = dir.path().join("kek");
    let old = read_kek(&kek_path);
    let outcome = rotate(&config(), dir.path(), None).unwrap();
    assert_eq!(
        (outcome.rewrapped, outcome.already, outcome.config_change),
        (5, 0, None)
    );
    let new = read_kek(&kek_path);
    assert_ne!(new, old);
    assert_eq!(outcome.fingerprint, new.fingerprint());
    assert!(!new_kek_path(&kek_path).exists());
    assert_keys(
        &Keyring::from_config(&config(), dir.path()).unwrap(),
        &users,
    );
    let stale = Keyring::open(&dir.path().join(KEYS_DIR), old).unwrap();
    assert!(
        stale.existing_data_key("user0").is_err(),
        "the old KEK still opens a key"
    );
}

#[test]
fn an_interrupted_rotation_leaves_every_key_readable_and_a_rerun_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let users = make_users(dir.path(), 6);
    let kek_path = dir.path().join("kek");
    let old = read_kek(&kek_path);
    // A server running since before the rotation, with one key cached and the others not.
    let running = Keyring::from_config(&config(), dir.path()).unwrap();
    running.existing_data_key("user0").unwrap();

    assert!(rotate_until(&config(), dir.path(), None, Some(2)).is_err());
    let pending = read_kek(&new_kek_path(&kek_path));
    assert_eq!(
        read_kek(&kek_path),
        old,
        "swapped before every key was re-wrapped"
    );
    assert_keys(
        &Keyring::from_config(&config(), dir.path()).unwrap(),
        &users,
    );
    // A new user created mid-rotation is wrapped under the pending KEK.
    let late = running.data_key("late").unwrap();

    let outcome = rotate(&config(), dir.path(), None).unwrap();
    assert_eq!(outcome.rewrapped + outcome.already, 7);
    assert_eq!(
        read_kek(&kek_path),
        pending,
        "the re-run made yet another KEK"
    );
    assert_keys(&running, &users);
    let restarted = Keyring::from_config(&config(), dir.path()).unwrap();
    assert_keys(&restarted, &users);
    assert_eq!(restarted.existing_data_key("late").unwrap(), Some(late));
}

#[test]
fn rotation_to_a_kms_command_is_followed_by_a_running_server_and_finished_by_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let new = Kek::generate().unwrap();
    let command = vec!["echo".to_owned(), new.to_hex()];
    let from_file = config();
    let users = make_users(dir.path(), 3);
    let running = Keyring::from_config(&from_file, dir.path()).unwrap();

    let source = KekSource::KekCommand(command.clone());
    let outcome = rotate(&from_file, dir.path(), Some(source.clone())).unwrap();
    assert_eq!(outcome.rewrapped, 3);
    let change = outcome.config_change.unwrap();
    assert!(change.starts_with("kek_command = [\"echo\""), "{change}");
    assert!(dir.path().join(PENDING_MARKER).exists());
    // The old configuration still works (the marker names the new KEK) and new keys go under the new KEK.
    assert_keys(&running, &users);
    assert_keys(
        &Keyring::from_config(&from_file, dir.path()).unwrap(),
        &users,
    );
    let other = Kek::generate().unwrap();
    let err = rotate(
        &from_file,
        dir.path(),
        Some(KekSource::KekCommand(vec!["echo".into(), other.to_hex()])),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pending"), "{err}");

    let to_command = EncryptionConfig {
        kek_command: Some(command),
        ..config()
    };
    // Run again after the switch: nothing to re-wrap; the marker goes.
    let outcome = rotate(&to_command, dir.path(), None).unwrap();
    assert_eq!(
        (outcome.rewrapped, outcome.already, outcome.config_change),
        (0, 3, None)
    );
    assert!(
        !dir.path().join(PENDING_MARKER).exists(),
        "marker kept after the switch"
    );
    assert_keys(
        &Keyring::from_config(&to_command, dir.path()).unwrap(),
        &users,
    );
    let stale = Keyring::open(
        &dir.path().join(KEYS_DIR),
        read_kek(&dir.path().join("kek")),
    )
    .unwrap();
    assert!(stale.existing_data_key("user1").is_err());
    // With a command source a new KEK must be named.
    let err = rotate(&to_command, dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--new-kek-command"), "{err}");
}

#[test]
fn the_first_start_under_the_new_source_removes_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let users = make_users(dir.path(), 2);
    let new = Kek::generate().unwrap();
    let new_file = dir.path().join("kek2");
    std::fs::write(&new_file, format!("{}\n", new.to_hex())).unwrap();
    std::fs::set_permissions(
        &new_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let outcome = rotate(
        &config(),
        dir.path(),
        Some(KekSource::KekFile(new_file.clone())),
    )
    .unwrap();
    assert_eq!(outcome.rewrapped, 2);
    assert!(outcome.config_change.unwrap().starts_with("kek_file = "));
    let switched = EncryptionConfig {
        kek_file: Some(new_file),
        ..config()
    };
    assert_keys(
        &Keyring::from_config(&switched, dir.path()).unwrap(),
        &users,
    );
    assert!(!dir.path().join(PENDING_MARKER).exists());
}

#[test]
fn a_damaged_key_file_stops_the_rotation_before_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    let users = make_users(dir.path(), 2);
    let kek_path = dir.path().join("kek");
    let old = read_kek(&kek_path);
    std::fs::write(
        key_path(&dir.path().join(KEYS_DIR), "broken").unwrap(),
        b"junk",
    )
    .unwrap();
    let err = rotate(&config(), dir.path(), None).unwrap_err().to_string();
    assert!(
        err.contains("damaged") && err.contains("old KEK stays"),
        "{err}"
    );
    assert_eq!(read_kek(&kek_path), old);
    assert_keys(
        &Keyring::from_config(&config(), dir.path()).unwrap(),
        &users,
    );
}

#[test]
fn config_sources_and_validation() {
    let state = Path::new("/s");
    assert_eq!(config().source(state), KekSource::KekFile("/s/kek".into()));
    let both = EncryptionConfig {
        kek_file: Some("k".into()),
        kek_command: Some(vec!["kms".into()]),
        ..config()
    };
    assert!(both.validate().unwrap_err().to_string().contains("exclude"));
    let empty = EncryptionConfig {
        kek_command: Some(vec![]),
        ..config()
    };
    assert!(empty.validate().is_err());
    config().validate().unwrap();
    let marker: KekSource = toml::from_str("kek_command = [\"kms\", \"get\"]\n").unwrap();
    assert_eq!(
        marker,
        KekSource::KekCommand(vec!["kms".into(), "get".into()])
    );
}

#[test]
fn keys_created_while_a_rotation_runs_all_end_under_the_new_kek() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        make_users(dir.path(), 20);
        let running = Arc::new(Keyring::from_config(&config(), dir.path()).unwrap());
        let barrier = Arc::new(Barrier::new(2));
        let creator = {
            let (running, barrier) = (Arc::clone(&running), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                (0..30)
                    .map(|i| {
                        let user = format!("new{i}");
                        let key = running.data_key(&user).unwrap();
                        (user, key)
                    })
                    .collect::<Vec<_>>()
            })
        };
        barrier.wait();
        rotate(&config(), dir.path(), None).unwrap();
        let created = creator.join().unwrap();
        // Only the new KEK, no pending one and no refresh: every file must be under it.
        let new = read_kek(&dir.path().join("kek"));
        let strict = Keyring::open(&dir.path().join(KEYS_DIR), new).unwrap();
        for (user, key) in &created {
            assert_eq!(
                strict.existing_data_key(user).unwrap(),
                Some(*key),
                "round {round}: {user}"
            );
        }
    }
}
