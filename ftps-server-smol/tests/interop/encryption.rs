//! Encryption at rest (`[encryption]`, `--encrypt`) with real clients against the `ftps-server` binary: curl and
//! lftp upload and download through it, REST downloads from many offsets, SIZE and LIST show plaintext sizes, no
//! stored byte holds the plaintext, every tamper case fails the transfer without delivering a wrong byte, keys
//! survive a rotation, versions stay encrypted, `keys decrypt` opens a file offline, and the S3 backend stores
//! only ciphertext.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ftps_testkit::{peer, TempDir};

use crate::events::{configure, curl_as, start_server};
use crate::{run, PASSWORD, USER};

/// Plaintext bytes per segment of the format, and the AES-GCM tag that follows each segment.
const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;

/// Text no ciphertext contains by chance: the plaintext of every file starts each 64-byte line with it.
const MARKER: &[u8] = b"PLAINTEXT-MARKER-";

/// `len` bytes of recognisable plaintext, different per `seed`.
fn plaintext(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while out.len() < len {
        out.extend_from_slice(MARKER);
        out.extend_from_slice(format!("{seed:03}-{line:043}\n").as_bytes());
        line += 1;
    }
    out.truncate(len);
    out
}

/// The header length of a stored file, from its ciphertext and plaintext sizes (whatever the format's header
/// holds, each segment adds exactly its tag).
fn header_len(cipher: usize, plain: usize) -> usize {
    cipher - plain - TAG * plain.div_ceil(SEGMENT).max(1)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// No stored file (live, temporary or kept version) contains the marker.
fn assert_no_plaintext_under(root: &Path) {
    let files = files_under(root);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER),
            "{} holds plaintext",
            file.display()
        );
    }
}

struct Setup {
    dir: TempDir,
    curl_bin: PathBuf,
}

impl Setup {
    fn new(name: &str, extra_config: &str) -> Option<Self> {
        let curl_bin = peer("curl")?;
        let dir = TempDir::new(name);
        let config = format!(
            "root = {root:?}\nstate_dir = {state:?}\n{extra_config}\n\n[encryption]\nenabled = true\n",
            root = dir.path().join("root"),
            state = dir.path().join("state"),
        );
        configure(dir.path(), &config);
        Some(Self { dir, curl_bin })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn server_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ftps-server"));
        command
            .arg("--config")
            .arg(self.dir.path().join("server.toml"));
        command
    }

    fn curl(&self) -> Command {
        curl_as(&self.curl_bin, PASSWORD)
    }

    fn upload(&self, port: u16, name: &str, bytes: &[u8]) {
        let local = self.dir.path().join("upload.tmp");
        std::fs::write(&local, bytes).unwrap();
        run(self
            .curl()
            .arg("-T")
            .arg(&local)
            .arg(format!("ftp://127.0.0.1:{port}/{name}")));
    }

    /// Downloads `name` from byte `offset` (REST); the output and what was received before any failure.
    fn download(&self, port: u16, name: &str, offset: usize) -> (Output, Vec<u8>) {
        let local = self.dir.path().join("download.tmp");
        let _ = std::fs::remove_file(&local);
        let mut command = self.curl();
        if offset > 0 {
            command.args(["-C", &offset.to_string()]);
        }
        let output = command
            .arg("-o")
            .arg(&local)
            .arg(format!("ftp://127.0.0.1:{port}/{name}"))
            .output()
            .unwrap();
        (output, std::fs::read(&local).unwrap_or_default())
    }
}

#[test]
fn encrypted_files_serve_curl_and_lftp_and_never_reach_the_disk_in_plaintext() {
    let Some(setup) = Setup::new("encryption", "") else {
        return;
    };
    let (server, port) = start_server(setup.dir.path());
    let sizes = [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 300_000];
    for (i, size) in sizes.iter().enumerate() {
        setup.upload(port, &format!("f{size}.txt"), &plaintext(*size, i as u8));
    }
    // The key-encryption key was generated private, and alice has a wrapped data key.
    let kek = setup.dir.path().join("state/kek");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kek).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", kek.display());
    }
    assert_eq!(
        std::fs::read_dir(setup.dir.path().join("state/keys"))
            .unwrap()
            .count(),
        1
    );

    for (i, size) in sizes.iter().enumerate() {
        let name = format!("f{size}.txt");
        let expected = plaintext(*size, i as u8);
        // SIZE gives the plaintext size (curl -I prints it as Content-Length).
        let head = run(setup
            .curl()
            .arg("-I")
            .arg(format!("ftp://127.0.0.1:{port}/{name}")));
        assert!(
            String::from_utf8_lossy(&head.stdout).contains(&format!("Content-Length: {size}")),
            "{name}: {}",
            String::from_utf8_lossy(&head.stdout)
        );
        for offset in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 200_000, *size] {
            if offset > *size {
                continue;
            }
            let (output, received) = setup.download(port, &name, offset);
            assert!(output.status.success(), "{name} from {offset}: {output:?}");
            assert!(
                received == expected[offset..],
                "{name} from {offset}: wrong bytes"
            );
        }
    }
    // LIST shows plaintext sizes.
    let listing = run(setup.curl().arg(format!("ftp://127.0.0.1:{port}/"))).stdout;
    let listing = String::from_utf8_lossy(&listing);
    for size in sizes {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" f{size}.txt")))
            .unwrap_or_else(|| panic!("f{size}.txt not in {listing}"));
        assert!(
            line.split_whitespace().any(|w| w == size.to_string()),
            "{line}"
        );
    }
    // APPE appends (a new file under a fresh salt, not a reused nonce).
    let tail = plaintext(70_000, 9);
    std::fs::write(setup.dir.path().join("tail.tmp"), &tail).unwrap();
    run(setup
        .curl()
        .arg("--append")
        .arg("-T")
        .arg(setup.dir.path().join("tail.tmp"))
        .arg(format!("ftp://127.0.0.1:{port}/f300000.txt")));
    let (output, received) = setup.download(port, "f300000.txt", 0);
    assert!(output.status.success());
    let mut appended = plaintext(300_000, 5);
    appended.extend_from_slice(&tail);
    assert!(received == appended, "APPE result differs");

    // REST + STOR resumes an upload (Python's ftplib: SIZE, then REST from there), also re-encrypted anew.
    if let Some(python) = peer("python3") {
        let whole = plaintext(250_000, 8);
        setup.upload(port, "resumed.txt", &whole[..100_000]);
        let local = setup.dir.path().join("resumed.tmp");
        std::fs::write(&local, &whole).unwrap();
        run(Command::new(python)
            .arg(ftps_testkit::client_script("ftplib_client.py"))
            .args([
                "--insecure",
                "127.0.0.1",
                &port.to_string(),
                USER,
                PASSWORD,
                "-",
            ])
            .arg(format!("resume-put:{}:resumed.txt", local.display())));
        let (output, received) = setup.download(port, "resumed.txt", 0);
        assert!(output.status.success());
        assert!(received == whole, "REST + STOR result differs");
    }

    // lftp, the other way round: put with lftp, get with curl, and get with lftp.
    if let Some(lftp) = peer("lftp") {
        let local = TempDir::new("encryption-lftp");
        let data = plaintext(1_000_000, 7);
        std::fs::write(local.path().join("lftp.txt"), &data).unwrap();
        let script = format!(
            "set ssl:verify-certificate no; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; \
             open -u {USER},'{PASSWORD}' ftp://127.0.0.1:{port}; lcd {local}; put lftp.txt -o lftp.txt; \
             get f65537.txt -o back.txt",
            local = local.path().display()
        );
        run(Command::new(lftp).args(["-c", &script]));
        assert!(std::fs::read(local.path().join("back.txt")).unwrap() == plaintext(65_537, 4));
        let (output, received) = setup.download(port, "lftp.txt", 123_456);
        assert!(output.status.success());
        assert!(received == data[123_456..]);
    }
    assert_no_plaintext_under(&setup.root());
    drop(server);

    // Offline, as after a disaster: the KEK and the keys folder open a stored file without the server.
    let offline = setup.dir.path().join("offline.txt");
    run(setup
        .server_command()
        .args(["keys", "decrypt", "--user", USER])
        .arg(setup.root().join("f65536.txt"))
        .arg("-o")
        .arg(&offline));
    assert!(std::fs::read(&offline).unwrap() == plaintext(SEGMENT, 3));
}

/// Our client, logged in as the test user, not checking the generated certificate.
fn own_client(port: u16) -> ftps_client_blocking::Client {
    let config = ftps_client_blocking::ClientConfig::new().danger_accept_invalid_certs(true);
    let mut client = ftps_client_blocking::Client::connect("127.0.0.1", port, config).unwrap();
    client.login(USER, PASSWORD).unwrap();
    client
}

#[test]
fn tampered_files_fail_the_transfer_without_a_wrong_byte_and_keys_survive_rotation() {
    let Some(setup) = Setup::new("encryption-tamper", "") else {
        return;
    };
    let (server, port) = start_server(setup.dir.path());
    let size = 300_000; // 4 full segments and a short last one
    let original = plaintext(size, 1);
    setup.upload(port, "f.txt", &original);
    setup.upload(port, "g.txt", &plaintext(size, 2));
    let stored = std::fs::read(setup.root().join("f.txt")).unwrap();
    let other = std::fs::read(setup.root().join("g.txt")).unwrap();
    let header = header_len(stored.len(), size);
    let segment = |i: usize| header + i * (SEGMENT + TAG)..header + (i + 1) * (SEGMENT + TAG);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = stored.clone();
    flipped[200_000] ^= 0x01;
    cases.push(("flipped body byte", flipped));
    let mut flipped_header = stored.clone();
    flipped_header[header - 1] ^= 0x80;
    cases.push(("flipped header byte", flipped_header));
    let mut flipped_tag = stored.clone();
    flipped_tag[segment(0).end - 1] ^= 0x01;
    cases.push(("flipped tag byte", flipped_tag));
    cases.push(("cut mid-segment", stored[..stored.len() - 1000].to_vec()));
    cases.push(("cut at a segment end", stored[..segment(3).end].to_vec()));
    let mut longer = stored.clone();
    longer.push(0);
    cases.push(("trailing byte", longer));
    let mut reordered = stored.clone();
    reordered[segment(1)].copy_from_slice(&stored[segment(2)]);
    reordered[segment(2)].copy_from_slice(&stored[segment(1)]);
    cases.push(("segments 1 and 2 swapped", reordered));
    let mut spliced = stored.clone();
    spliced[segment(1)].copy_from_slice(&other[segment(1)]);
    cases.push(("segment from another file", spliced));
    cases.push(("header from another file", {
        let mut mixed = other[..header].to_vec();
        mixed.extend_from_slice(&stored[header..]);
        mixed
    }));

    for (i, (case, bytes)) in cases.iter().enumerate() {
        let name = format!("t{i}.txt");
        std::fs::write(setup.root().join(&name), bytes).unwrap();
        for offset in [0, SEGMENT + 5] {
            let (output, received) = setup.download(port, &name, offset);
            // REST never reads the segments before the offset: damage only there (segment 0's tag) goes
            // unnoticed, and the bytes delivered are still the right ones.
            let must_fail = offset == 0 || *case != "flipped tag byte";
            assert!(
                !(must_fail && output.status.success()),
                "{case} from {offset}: accepted"
            );
            assert!(
                original[offset..].starts_with(&received),
                "{case} from {offset}: a wrong byte was delivered"
            );
        }
        // curl stops at the short data connection without reading the final reply; our client reports it.
        let error = own_client(port)
            .get(&name, &setup.dir.path().join("own.tmp"), false)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("451") || error.contains("426"),
            "{case}: {error}"
        );
    }

    // A file from another user's store: bob's data key is not alice's.
    let bob_password = "bob's own password 42";
    let added = setup
        .server_command()
        .args(["user", "add", "bob", "--home", "/bob"])
        .env("FTPS_PASSWORD", bob_password)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    std::fs::create_dir_all(setup.root().join("bob")).unwrap();
    drop(server);
    let (server, port) = start_server(setup.dir.path());
    let bobs = plaintext(100_000, 3);
    std::fs::write(setup.dir.path().join("bob.tmp"), &bobs).unwrap();
    run(Command::new(&setup.curl_bin)
        .args(["-sS", "--ssl-reqd", "--insecure", "--max-time", "30"])
        .args(["-u", &format!("bob:{bob_password}")])
        .arg("-T")
        .arg(setup.dir.path().join("bob.tmp"))
        .arg(format!("ftp://127.0.0.1:{port}/bobs.txt")));
    let (output, received) = setup.download(port, "bob/bobs.txt", 0);
    assert!(!output.status.success(), "alice read bob's file");
    assert!(received.is_empty());

    // Rotation re-wraps the keys, the file data stays as it was, and every file still downloads.
    drop(server);
    let kek = setup.dir.path().join("state/kek");
    let kek_before = std::fs::read(&kek).unwrap();
    let stored_before = std::fs::read(setup.root().join("f.txt")).unwrap();
    run(setup.server_command().args(["keys", "rotate"]));
    assert_ne!(std::fs::read(&kek).unwrap(), kek_before);
    assert_eq!(
        std::fs::read(setup.root().join("f.txt")).unwrap(),
        stored_before
    );
    let (_server, port) = start_server(setup.dir.path());
    let (output, received) = setup.download(port, "f.txt", 0);
    assert!(output.status.success(), "{output:?}");
    assert!(received == original);
}

#[test]
fn versions_of_encrypted_files_stay_encrypted_and_restore() {
    let Some(setup) = Setup::new("encryption-versions", "") else {
        return;
    };
    // [versions] in the config file: append it (configure wrote [encryption] last).
    let config = setup.dir.path().join("server.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[versions]\nenabled = true\n");
    std::fs::write(&config, text).unwrap();
    let (_server, port) = start_server(setup.dir.path());
    let v1 = plaintext(150_000, 1);
    setup.upload(port, "doc.txt", &v1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = utc_now();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    setup.upload(port, "doc.txt", &plaintext(90_000, 2));
    let (output, received) = setup.download(port, &format!("@at/{between}/doc.txt"), 0);
    assert!(output.status.success(), "{output:?}");
    assert!(received == v1);
    let (output, received) = setup.download(port, &format!("@at/{between}/doc.txt"), 70_000);
    assert!(output.status.success(), "{output:?}");
    assert!(received == v1[70_000..]);
    let versions = setup.root().join(".ftps-tmp/versions");
    let kept = files_under(&versions)
        .into_iter()
        .find(|f| std::fs::metadata(f).unwrap().len() > 150_000)
        .expect("the first version is kept");
    assert_no_plaintext_under(&setup.root());
    // A kept version opens offline like a live file.
    let offline = setup.dir.path().join("v1.txt");
    run(setup
        .server_command()
        .args(["keys", "decrypt", "--user", USER])
        .arg(&kept)
        .arg("-o")
        .arg(&offline));
    assert!(std::fs::read(&offline).unwrap() == v1);
}

/// Now in UTC as `YYYY-MM-DDTHH:MM:SSZ`, from `date` (no calendar code in the tests).
fn utc_now() -> String {
    let out = run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])).stdout;
    String::from_utf8(out).unwrap().trim().to_owned()
}

#[test]
fn encryption_composes_with_the_s3_backend() {
    let Some(moto) = ftps_testkit::Moto::start() else {
        return;
    };
    let (_, bucket) = crate::moto_bucket(&moto, "enc");
    let storage = format!(
        "\n[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"enc\"\npath_style = true\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        moto.endpoint(),
        ftps_testkit::Moto::ACCESS_KEY,
        ftps_testkit::Moto::SECRET_KEY,
    );
    let Some(setup) = Setup::new("encryption-s3", &storage) else {
        return;
    };
    let (_server, port) = start_server(setup.dir.path());
    let data = plaintext(200_000, 4);
    setup.upload(port, "s3.txt", &data);
    // The object holds ciphertext only; the FTP view has the plaintext, from any offset.
    let object = crate::s3_object(&bucket, "/s3.txt").expect("the object is stored");
    assert!(object.len() > data.len());
    assert!(!object.windows(MARKER.len()).any(|w| w == MARKER));
    for offset in [0, 1, SEGMENT, 150_000] {
        let (output, received) = setup.download(port, "s3.txt", offset);
        assert!(output.status.success(), "{output:?}");
        assert!(received == data[offset..], "from {offset}");
    }
}
