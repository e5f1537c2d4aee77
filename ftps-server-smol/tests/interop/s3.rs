//! The `ftps-server` binary with `[storage] backend = "s3"` against moto's S3 server on loopback: curl uploads
//! (one PUT and a multipart upload), downloads byte for byte, resumes a download with REST, lists, renames, and
//! our `ftps` client mirrors a tree of a few dozen files up and back down.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ftps_server_smol::storage::{S3Storage, Storage, WriteMode};
use ftps_testkit::{peer, run_within, KillOnDrop, Moto, TempDir};

use crate::{random_bytes, run, s3_object as object, PASSWORD, USER};

/// A passive range of its own for this test binary (below Linux's ephemeral ports, apart from the balancer's).
fn passive_range() -> (u16, u16) {
    let base = 16000 + (std::process::id() % 800) as u16 * 10;
    (base, base + 9)
}

fn same_tree(a: &Path, b: &Path) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(a).unwrap() {
        let entry = entry.unwrap();
        let other = b.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            files += same_tree(&entry.path(), &other);
        } else {
            assert_eq!(
                std::fs::read(entry.path()).unwrap(),
                std::fs::read(&other).unwrap_or_default(),
                "{}",
                other.display()
            );
            files += 1;
        }
    }
    files
}

#[test]
fn server_binary_on_s3_serves_curl_and_the_ftps_mirror() {
    let Some(curl_bin) = peer("curl") else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    let (options, _) = crate::moto_bucket(&moto, "ftp-e2e");

    let dir = TempDir::new("s3-e2e");
    let extra = "prefix = \"srv\"\npart_size_mib = 5\n";
    let (config, port) = s3_config(&dir, &moto, "ftp-e2e", extra);
    let log_path = dir.path().join("server.log");
    let server = start_server(&config, &log_path, port);
    let url = |path: &str| ftp_url(port, path);
    let curl = || curl_command(&curl_bin);
    let local = TempDir::new("s3-e2e-local");
    let small = random_bytes(300_000, 1);
    // 12 MiB + a bit: three 5 MiB parts, the last one short.
    let big = random_bytes(12 * 1024 * 1024 + 4321, 2);
    std::fs::write(local.path().join("small.bin"), &small).unwrap();
    std::fs::write(local.path().join("big.bin"), &big).unwrap();
    run(curl()
        .args(["--ftp-create-dirs", "-T"])
        .arg(local.path().join("small.bin"))
        .arg(url("in/")));
    run(curl()
        .arg("-T")
        .arg(local.path().join("big.bin"))
        .arg(url("in/")));
    // The objects are where the prefix says.
    let whole = S3Storage::new(&options).unwrap();
    let meta = futures_lite::future::block_on(ftps_server_smol::storage::Storage::metadata(
        &whole,
        "/srv/in/big.bin",
    ))
    .unwrap();
    assert_eq!(meta.size, big.len() as u64);

    // Downloads, byte for byte; then a download resumed from 5,000,000 bytes (REST, a ranged GET).
    let down = local.path().join("down.bin");
    run(curl().arg("-o").arg(&down).arg(url("in/big.bin")));
    assert!(std::fs::read(&down).unwrap() == big, "big.bin differs");
    run(curl().arg("-o").arg(&down).arg(url("in/small.bin")));
    assert_eq!(std::fs::read(&down).unwrap(), small);
    std::fs::write(&down, &big[..5_000_000]).unwrap();
    run(curl()
        .args(["-C", "-", "-o"])
        .arg(&down)
        .arg(url("in/big.bin")));
    assert!(
        std::fs::read(&down).unwrap() == big,
        "resumed download differs"
    );

    // Listings (LIST and NLST), SIZE, a rename and a delete.
    let listing = run(curl().arg(url("in/")));
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.contains("small.bin") && text.contains("big.bin"),
        "{text}"
    );
    assert!(text.contains(&big.len().to_string()), "{text}");
    run(curl()
        .args([
            "-Q",
            "-RNFR small.bin",
            "-Q",
            "-RNTO renamed.bin",
            "-Q",
            "-DELE big.bin",
        ])
        .arg(url("in/")));
    let names = run(curl().arg("--list-only").arg(url("in/")));
    assert_eq!(String::from_utf8_lossy(&names.stdout).trim(), "renamed.bin");
    // MFMT is refused (504 from the engine: `requests.rs` tests the mapping; curl only says "not accepted").
    let mfmt = curl()
        .args(["-Q", "-MFMT 20200101000000 renamed.bin"])
        .arg(url("in/"))
        .output()
        .unwrap();
    assert!(!mfmt.status.success());

    // Our client mirrors a tree of 36 files in 4 directories up, and back down into an empty directory. The names
    // hold characters that the listings' URL encoding changes (space, plus, percent, ampersand).
    let ftps = ftps_testkit::build_bin(env!("CARGO"), "ftps-client-blocking", "ftps");
    let src = local.path().join("src");
    for i in 0..36 {
        let path = src.join(format!("d{} x+y/f{i:02} 100% & more+.bin", i % 4));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, random_bytes(1000 + i * 997, i as u64 + 10)).unwrap();
    }
    let mirror = |args: &[&str]| {
        let output = run_within(
            Command::new(&ftps)
                .current_dir(local.path())
                .args(["--insecure", "mirror"])
                .args(args)
                .env("FTPS_PASSWORD", PASSWORD),
            Duration::from_secs(300),
        );
        assert!(
            output.status.success(),
            "ftps mirror {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let site = format!("ftps://{USER}@127.0.0.1:{port}/site");
    let up = mirror(&["--upload", "src", &site]);
    assert!(up.starts_with("mirror: 36 transferred"), "{up}");
    let down_dir = local.path().join("dst");
    let down = mirror(&["--download", &site, "dst"]);
    assert!(down.starts_with("mirror: 36 transferred"), "{down}");
    assert_eq!(same_tree(&src, &down_dir), 36);
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains("serving an S3 bucket"), "{log}");
}

/// A config file for the binary on bucket `bucket` of `moto`, with `extra` appended; returns its path and port.
fn s3_config(dir: &TempDir, moto: &Moto, bucket: &str, extra: &str) -> (std::path::PathBuf, u16) {
    let users = dir.path().join("users.toml");
    crate::add_test_user(&users);
    let port = ftps_testkit::free_port();
    let (first, last) = passive_range();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "root = {root:?}\nstate_dir = {state:?}\nusers_file = {users:?}\n\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\npassive_ports = \"{first}-{last}\"\n\n\
             [storage]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\n\
             path_style = true\n\n{extra}",
            root = dir.path().join("unused-root"),
            state = dir.path().join("state"),
            endpoint = moto.endpoint(),
        ),
    )
    .unwrap();
    (config, port)
}

/// The binary on `config`, with the S3 credentials in the environment as an operator would pass them.
fn server_command(config: &Path, log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ftps-server"));
    command
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", Moto::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", Moto::SECRET_KEY)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

/// Starts the binary with `config` (logging to `log`) and waits until it listens on `port`.
fn start_server(config: &Path, log: &Path, port: u16) -> KillOnDrop {
    let server = KillOnDrop(server_command(config, log).spawn().unwrap());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        ftps_testkit::wait_for_listener(addr, Duration::from_secs(20)),
        "the server does not listen: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    server
}

fn ftp_url(port: u16, path: &str) -> String {
    format!("ftp://127.0.0.1:{port}/{path}")
}

/// curl with explicit FTPS required and the test user; certificates not checked (the server's are generated).
fn curl_command(curl_bin: &Path) -> Command {
    let mut command = Command::new(curl_bin);
    command
        .args(["-sS", "--ssl-reqd", "--insecure", "--max-time", "120"])
        .args(["-u", &format!("{USER}:{PASSWORD}")]);
    command
}

/// Now in UTC, to the second, RFC 3339.
fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn server_binary_serves_time_views_from_bucket_versioning() {
    let Some(curl_bin) = peer("curl") else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    let versions = "[versions]\nenabled = true\n";

    // A bucket without versioning: the server refuses to start, naming the fix.
    crate::moto_bucket(&moto, "ftp-plain");
    let dir = TempDir::new("s3-versions-plain");
    let (config, _) = s3_config(&dir, &moto, "ftp-plain", versions);
    let log = dir.path().join("server.log");
    // run_within keeps the output itself; the log file stays empty then.
    let output = run_within(&mut server_command(&config, &log), Duration::from_secs(60));
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("put-bucket-versioning"), "{text}");

    let (_, bucket) = crate::moto_bucket(&moto, "ftp-versions");
    futures_lite::future::block_on(bucket.enable_versioning()).unwrap();
    let dir = TempDir::new("s3-versions");
    let (config, port) = s3_config(&dir, &moto, "ftp-versions", versions);
    let _server = start_server(&config, &dir.path().join("server.log"), port);
    // The local root is not used with S3, and not created.
    assert!(!dir.path().join("unused-root").exists());
    let url = |path: &str| ftp_url(port, path);
    let curl = || curl_command(&curl_bin);
    let local = TempDir::new("s3-versions-local");
    let file = local.path().join("file.txt");
    std::fs::write(&file, b"first content\n").unwrap();
    run(curl().arg("-T").arg(&file).arg(url("file.txt")));
    // moto dates versions to the second: the instant between the two uploads is a second of its own.
    let between = utc_now();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&file, b"second content\n").unwrap();
    run(curl().arg("-T").arg(&file).arg(url("file.txt")));

    let now = run(curl().arg(url("file.txt")));
    assert_eq!(now.stdout, b"second content\n");
    let then = run(curl().arg(url(&format!("@at/{between}/file.txt"))));
    assert_eq!(then.stdout, b"first content\n");
    let listing = run(curl()
        .arg("--list-only")
        .arg(url(&format!("@at/{between}/"))));
    assert_eq!(String::from_utf8_lossy(&listing.stdout).trim(), "file.txt");
    // `/@versions/file.txt/`: the old version by name, then the current one.
    let names = run(curl().arg("--list-only").arg(url("@versions/file.txt/")));
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let old = names.iter().find(|n| !n.ends_with("-current")).unwrap();
    let first = run(curl().arg(url(&format!("@versions/file.txt/{old}"))));
    assert_eq!(first.stdout, b"first content\n");
    // The views are read-only.
    let refused = curl()
        .arg("-T")
        .arg(&file)
        .arg(url(&format!("@at/{between}/new.txt")))
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

/// `kill -9` of the server in the middle of a `STOR` over an existing object, then twice in the middle of a
/// directory rename (while copying, while deleting). After the first the old object is whole (an upload's object
/// appears only when it completes); after each of the others every file of the directory is under one of its two
/// names with its content (every copy is made before the first delete). Nothing is lost either way.
#[test]
fn a_server_killed_mid_upload_or_mid_rename_loses_nothing() {
    let Some(curl_bin) = peer("curl") else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    let (_, bucket) = crate::moto_bucket(&moto, "ftp-killed");
    let dir = TempDir::new("s3-killed");
    let (config, port) = s3_config(&dir, &moto, "ftp-killed", "part_size_mib = 5\n");
    let start = |name: &str| start_server(&config, &dir.path().join(name), port);
    let url = |path: &str| ftp_url(port, path);
    // Quiet: two of these are killed halfway, by design.
    let curl = || {
        let mut command = curl_command(&curl_bin);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    };
    let local = TempDir::new("s3-killed-local");

    // An upload of 40 MiB at 4 MiB/s over a 1 MB object: killed after ~12 MiB, two 5 MiB parts sent to S3.
    let server = start("server1.log");
    let old = random_bytes(1_000_000, 31);
    std::fs::write(local.path().join("keep.bin"), &old).unwrap();
    run(curl()
        .arg("-T")
        .arg(local.path().join("keep.bin"))
        .arg(url("")));
    let new = random_bytes(40 << 20, 32);
    std::fs::write(local.path().join("new.bin"), &new).unwrap();
    let mut upload = KillOnDrop(
        curl()
            .args(["--limit-rate", "4M", "-T"])
            .arg(local.path().join("new.bin"))
            .arg(url("keep.bin"))
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));
    drop(server);
    let status = upload.0.wait().unwrap();
    assert!(!status.success(), "the upload cannot have completed");
    assert!(
        object(&bucket, "/keep.bin") == Some(old.clone()),
        "the object changed after a killed upload"
    );
    let server = start("server2.log");
    let down = local.path().join("down.bin");
    run(curl().arg("-o").arg(&down).arg(url("keep.bin")));
    assert!(
        std::fs::read(&down).unwrap() == old,
        "the download after the restart differs"
    );

    // A rename of a directory of 400 files, killed as soon as its first copy exists, then another as soon as its
    // first original is deleted (every copy made, the deletes under way).
    let mut server = Some(server);
    for (from, to, killed_when) in [("d1", "e1", "copying"), ("d2", "e2", "deleting")] {
        let server_now = server
            .take()
            .unwrap_or_else(|| start(&format!("server-{from}.log")));
        futures_lite::future::block_on(async {
            use futures_lite::AsyncWriteExt;
            Storage::mkdir(&bucket, &format!("/{from}")).await.unwrap();
            for i in 0..400 {
                let path = format!("/{from}/f{i:03}");
                let mut upload = Storage::open_write(&bucket, &path, WriteMode::Create)
                    .await
                    .unwrap();
                upload
                    .write_all(format!("content {i}").as_bytes())
                    .await
                    .unwrap();
                upload.commit().await.unwrap();
            }
        });
        let mut rename = KillOnDrop(
            curl()
                .args(["-Q", &format!("-RNFR {from}"), "-Q", &format!("-RNTO {to}")])
                .arg(url(""))
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (first_copy, first_original) = (format!("/{to}/f000"), format!("/{from}/f000"));
        while match killed_when {
            "copying" => object(&bucket, &first_copy).is_none(),
            _ => object(&bucket, &first_original).is_some(),
        } {
            assert!(
                std::time::Instant::now() < deadline,
                "the rename of {from} never got to {killed_when}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(server_now);
        let _ = rename.0.wait();
        let (mut both, mut moved) = (0, 0);
        for i in 0..400 {
            let want = format!("content {i}").into_bytes();
            let before = object(&bucket, &format!("/{from}/f{i:03}"));
            let after = object(&bucket, &format!("/{to}/f{i:03}"));
            assert!(
                before.as_ref() == Some(&want) || after.as_ref() == Some(&want),
                "{from}/f{i:03} is under neither name after a kill while {killed_when}: {before:?} {after:?}"
            );
            for copy in [&before, &after].into_iter().flatten() {
                assert_eq!(copy, &want, "{from}/f{i:03} has the wrong content");
            }
            both += usize::from(before.is_some() && after.is_some());
            moved += usize::from(before.is_none());
        }
        eprintln!("killed while {killed_when}: {both} files under both names, {moved} moved");
    }
}
