//! Restore from any point in time (issue 16), with real clients: a history of uploads, overwrites, deletes,
//! renames and directory changes is built through FTP at T1 < T2 < T3 (the versioning layer's clock is the
//! test's), then the tree at each instant is restored with curl, lftp `mirror` and `ftps mirror --at`, and every
//! file's SHA-256 is compared with what was current then; again after a restart (the history reloaded from its
//! log). Clients that are not installed are skipped (`FTPS_INTEROP=require` makes that a failure).

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ftps_proto::server::SessionConfig;
use ftps_server_smol::auth::{
    AuthOutcome, AuthenticatedUser, Authenticator, LoginAttempt, Permission, UserHome,
};
use ftps_server_smol::server::{ListenerOptions, Server, PRELIMINARY_REPLY_WAIT};
use ftps_server_smol::storage::{
    parse_view_time, BoxFuture, Clock, LocalStorage, Storage, Versioned, VersionsOptions,
};
use ftps_testkit::{pattern, peer, run_within, TempDir, TestCert};
use sha2::{Digest, Sha256};

const USER: &str = "alice";
const PASSWORD: &str = "pw-restore";
const WAIT: Duration = Duration::from_secs(120);

/// alice (a home below the root) and bob (a home that is a directory of its own).
struct Users {
    bob_home: PathBuf,
}

const BOB: &str = "bob";

impl Authenticator for Users {
    fn authenticate(&self, attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome> {
        Box::pin(async move {
            if attempt.user == BOB && attempt.password == PASSWORD {
                return AuthOutcome::Accepted(AuthenticatedUser {
                    name: BOB.into(),
                    home: UserHome::Directory(self.bob_home.clone()),
                    permission: Permission::ReadWrite,
                    require_tls: None,
                    site_to_site: None,
                });
            }
            if attempt.user == USER && attempt.password == PASSWORD {
                AuthOutcome::Accepted(AuthenticatedUser {
                    name: USER.into(),
                    // A home below the root: the views must show this user's files at their own root.
                    home: UserHome::Virtual("/alice".into()),
                    permission: Permission::ReadWrite,
                    require_tls: None,
                    site_to_site: None,
                })
            } else {
                AuthOutcome::Denied
            }
        })
    }
}

fn secs_of(time: &str) -> i64 {
    parse_view_time(time)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Our server with versions on, over `root`, with the test's clock.
struct Site {
    addr: SocketAddr,
    server: Server,
}

impl Site {
    fn start(root: &Path, bob_home: &Path, cert: &TestCert, now: &Arc<AtomicI64>) -> Self {
        let c = Arc::clone(now);
        let clock: Clock = Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst).unsigned_abs())
        });
        let local: Arc<dyn Storage> = Arc::new(LocalStorage::open(root).unwrap());
        let log = LocalStorage::history_log_path(root).unwrap();
        let options = VersionsOptions {
            clock: Some(clock),
            ..VersionsOptions::default()
        };
        let versioned = Versioned::open(local, &log, options.clone()).unwrap();
        let server = Server::builder()
            .storage(Arc::new(versioned))
            .time_views(true)
            .home_versions(Some(options), Duration::from_secs(600), 100)
            .authenticator(Arc::new(Users {
                bob_home: bob_home.to_path_buf(),
            }))
            .tls(Arc::new(cert.server_config()))
            .session_config(SessionConfig {
                preliminary_reply_wait: PRELIMINARY_REPLY_WAIT,
                ..SessionConfig::default()
            })
            .build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        std::thread::spawn(move || {
            smol::block_on(async move {
                let listener = smol::net::TcpListener::try_from(listener).unwrap();
                serving.serve(listener, ListenerOptions::default()).await
            })
        });
        Self { addr, server }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

struct Fixture {
    _root: TempDir,
    scratch: TempDir,
    ca: PathBuf,
    site: Site,
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("ftps://{USER}@localhost:{}/{path}", self.site.addr.port())
    }

    fn ftps(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ftps"));
        command
            .arg("--ca-file")
            .arg(&self.ca)
            .args(["--timeout", "20", "-q"])
            .args(args)
            .current_dir(self.scratch.path())
            .env("FTPS_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        run_within(&mut command, WAIT)
    }

    fn ftps_ok(&self, args: &[&str]) -> Output {
        let out = self.ftps(args);
        assert!(
            out.status.success(),
            "ftps {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn put(&self, path: &str, body: &[u8]) {
        let local = self.scratch.path().join("upload.tmp");
        std::fs::write(&local, body).unwrap();
        self.ftps_ok(&["put", local.to_str().unwrap(), &self.url(path)]);
    }
}

/// The content of each file: distinct per file and per version, one of them larger than one read buffer.
fn body(name: &str, version: u32) -> Vec<u8> {
    if name == "top.bin" {
        return pattern(700 * 1024 + version as usize, version);
    }
    format!("{name} version {version}\n").into_bytes()
}

const T1: &str = "2026-11-23T10:00:00Z";
const T2: &str = "2026-11-23T11:00:00Z";
const T3: &str = "2026-11-23T12:00:00Z";

/// The history, built through FTP with our client, and what each instant must restore (path -> content).
fn build_history(f: &Fixture, now: &AtomicI64) -> Vec<(String, BTreeMap<String, Vec<u8>>)> {
    let mkdir = |p: &str| f.ftps_ok(&["mkdir", &f.url(p)]);
    now.store(secs_of(T1), Ordering::SeqCst);
    mkdir("docs");
    mkdir("old");
    f.put("docs/a.txt", &body("a.txt", 1));
    f.put("docs/b.txt", &body("b.txt", 1));
    f.put("top.bin", &body("top.bin", 1));
    f.put("old/x.txt", &body("x.txt", 1));
    now.store(secs_of(T2), Ordering::SeqCst);
    f.put("docs/a.txt", &body("a.txt", 2)); // overwrite
    f.ftps_ok(&["rm", &f.url("docs/b.txt")]);
    f.put("docs/c.txt", &body("c.txt", 1));
    f.ftps_ok(&["mv", &f.url("old"), "new"]); // a directory renamed
    now.store(secs_of(T3), Ordering::SeqCst);
    f.put("top.bin", &body("top.bin", 2));
    f.ftps_ok(&["mv", &f.url("docs/a.txt"), "docs/a-renamed.txt"]);
    mkdir("later");
    f.put("later/l.txt", &body("l.txt", 1));
    f.ftps_ok(&["rm", &f.url("new/x.txt")]);
    f.ftps_ok(&["rmdir", &f.url("new")]);
    now.store(secs_of(T3) + 7200, Ordering::SeqCst);

    let tree = |files: &[(&str, &str, u32)]| -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(path, name, v)| ((*path).to_owned(), body(name, *v)))
            .collect()
    };
    vec![
        // Before all history: an empty tree.
        ("2026-11-22".into(), BTreeMap::new()),
        // T1 + 30 min, seconds left out.
        (
            "2026-11-23T10:30Z".into(),
            tree(&[
                ("docs/a.txt", "a.txt", 1),
                ("docs/b.txt", "b.txt", 1),
                ("top.bin", "top.bin", 1),
                ("old/x.txt", "x.txt", 1),
            ]),
        ),
        // T2 + 30 min, as an offset.
        (
            "2026-11-23T12:30:00+01:00".into(),
            tree(&[
                ("docs/a.txt", "a.txt", 2),
                ("docs/c.txt", "c.txt", 1),
                ("top.bin", "top.bin", 1),
                ("new/x.txt", "x.txt", 1),
            ]),
        ),
        // After T3: a date.
        (
            "2026-11-24".into(),
            tree(&[
                ("docs/a-renamed.txt", "a.txt", 2),
                ("docs/c.txt", "c.txt", 1),
                ("top.bin", "top.bin", 2),
                ("later/l.txt", "l.txt", 1),
            ]),
        ),
    ]
}

/// Every file below `dir` with its SHA-256 (directories that hold nothing do not count).
fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, sha256(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn expected_hashes(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    files.iter().map(|(p, b)| (p.clone(), sha256(b))).collect()
}

/// The names at the top of a tree of files.
fn top_names(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut top: Vec<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap().to_owned())
        .collect();
    top.sort();
    top.dedup();
    top
}

fn restore_all(f: &Fixture, cases: &[(String, BTreeMap<String, Vec<u8>>)], round: &str) {
    let curl = peer("curl");
    let lftp = peer("lftp");
    let php = ftps_testkit::php_with_ftp();
    for (i, (time, files)) in cases.iter().enumerate() {
        let want = expected_hashes(files);
        // Our client.
        let dest = f.scratch.path().join(format!("{round}-ftps-{i}"));
        f.ftps_ok(&["mirror", "--at", time, &f.url(""), dest.to_str().unwrap()]);
        assert_eq!(
            tree_hashes(&dest),
            want,
            "ftps mirror --at {time} ({round})"
        );

        if let Some(lftp) = &lftp {
            let dest = f.scratch.path().join(format!("{round}-lftp-{i}"));
            std::fs::create_dir_all(&dest).unwrap();
            let script = format!(
                "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 30; \
                 set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file \"{}\"; \
                 open -u \"{USER},{PASSWORD}\" ftp://localhost:{}; mirror \"/@at/{time}/\" \"{}\"",
                f.ca.display(),
                f.site.addr.port(),
                dest.display()
            );
            let out = run_within(Command::new(lftp).args(["-c", &script]), WAIT);
            assert!(
                out.status.success(),
                "lftp mirror at {time}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                tree_hashes(&dest),
                want,
                "lftp mirror /@at/{time}/ ({round})"
            );
        }

        if let Some(php) = &php {
            // PHP's ftp extension (OpenSSL): CWD into the view, NLST it, then RETR each file by its path.
            let dest = f.scratch.path().join(format!("{round}-php-{i}"));
            std::fs::create_dir_all(&dest).unwrap();
            let script = r#"
                [$_, $port, $user, $pass, $view, $dest] = $argv;
                $files = array_slice($argv, 6);
                $ftp = ftp_ssl_connect('127.0.0.1', (int)$port, 30) or exit(2);
                ftp_login($ftp, $user, $pass) or exit(3);
                ftp_pasv($ftp, true) or exit(4);
                ftp_chdir($ftp, $view) or exit(5);
                $names = ftp_nlist($ftp, '.');
                if ($names === false) exit(6);
                sort($names);
                echo implode("
", $names), "
";
                foreach ($files as $p) {
                    @mkdir(dirname("$dest/$p"), 0777, true);
                    ftp_get($ftp, "$dest/$p", $p, FTP_BINARY) or exit(7);
                }
            "#;
            let mut command = Command::new(php);
            command
                .args(["-r", script, "--"])
                .args([
                    &f.site.addr.port().to_string(),
                    USER,
                    PASSWORD,
                    &format!("/@at/{time}/"),
                ])
                .arg(&dest)
                .args(files.keys());
            let out = run_within(&mut command, WAIT);
            assert!(out.status.success(), "php at {time}: {out:?}");
            let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.trim_start_matches("./").to_owned())
                .collect();
            assert_eq!(listed, top_names(files), "php NLST /@at/{time}/ ({round})");
            assert_eq!(
                tree_hashes(&dest),
                want,
                "php RETR in /@at/{time}/ ({round})"
            );
        }

        if let Some(curl) = &curl {
            // curl has no mirror: list the view's top directory, then fetch each file of the expected tree.
            let base = format!("ftp://localhost:{}/@at/{time}/", f.site.addr.port());
            let curl_cmd = || {
                let mut c = Command::new(curl);
                c.args(["-sS", "--ssl-reqd", "--max-time", "60", "--cacert"])
                    .arg(&f.ca)
                    .args(["-u", &format!("{USER}:{PASSWORD}")]);
                c
            };
            let out = run_within(curl_cmd().args(["-l", &base]), WAIT);
            assert!(out.status.success(), "curl NLST at {time}: {out:?}");
            let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            listed.sort();
            assert_eq!(listed, top_names(files), "curl NLST /@at/{time}/ ({round})");
            for (path, bytes) in files {
                let out = run_within(curl_cmd().arg(format!("{base}{path}")), WAIT);
                assert!(out.status.success(), "curl RETR {path} at {time}: {out:?}");
                assert_eq!(
                    sha256(&out.stdout),
                    sha256(bytes),
                    "curl {path} at {time} ({round})"
                );
            }
        }
    }
}

#[test]
fn restore_any_point_in_time_with_real_clients_and_after_a_restart() {
    let root = TempDir::new("restore-root");
    std::fs::create_dir_all(root.path().join("alice")).unwrap();
    let scratch = TempDir::new("restore-scratch");
    let cert = TestCert::generate();
    let ca = scratch.path().join("ca.pem");
    std::fs::write(&ca, &cert.cert_pem).unwrap();
    let now = Arc::new(AtomicI64::new(0));
    let bob_home = TempDir::new("restore-bob");
    let site = Site::start(root.path(), bob_home.path(), &cert, &now);
    let mut f = Fixture {
        _root: root,
        scratch,
        ca,
        site,
    };
    let cases = build_history(&f, &now);

    // The live tree is untouched by the history: no reserved name, nothing of the past.
    let live = tree_hashes(&f._root.path().join("alice"));
    assert_eq!(live, expected_hashes(&cases[3].1));

    restore_all(&f, &cases, "first");

    // One file's versions, by name in time order, each downloadable; REST works inside a view.
    let out = f.ftps_ok(&["ls", &f.url("@versions/top.bin/")]);
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0] < names[1] && names[1].ends_with("-current"),
        "{names:?}"
    );
    let old = f.ftps_ok(&[
        "get",
        &f.url(&format!("@versions/top.bin/{}", names[0])),
        "-",
    ]);
    assert_eq!(sha256(&old.stdout), sha256(&body("top.bin", 1)));

    // Read-only, with a reply that says so; a bad TIME is refused clearly.
    let out = f.ftps(&["rm", &f.url("@at/2026-11-24/top.bin")]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(said.contains("read-only"), "{said}");
    let out = f.ftps(&["ls", &f.url("@at/yesterday/")]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("501"), "{said}");

    // The commands a restore uses, inside a view: CWD, SIZE, MDTM (the version's time), REST + RETR, MLSD.
    let config = ftps_client_blocking::ClientConfig::new().danger_accept_invalid_certs(true);
    let mut c =
        ftps_client_blocking::Client::connect("127.0.0.1", f.site.addr.port(), config).unwrap();
    c.login(USER, PASSWORD).unwrap();
    c.cwd("/@at/2026-11-23T11:30:00Z/docs").unwrap();
    assert_eq!(c.pwd().unwrap(), "/@at/2026-11-23T11:30:00Z/docs");
    let a2 = body("a.txt", 2);
    assert_eq!(c.size("a.txt").unwrap(), a2.len() as u64);
    assert_eq!(
        c.mdtm("a.txt").unwrap(),
        UNIX_EPOCH + Duration::from_secs(secs_of(T2) as u64)
    );
    let mut down = c.retr("a.txt", 3).unwrap();
    let mut tail = Vec::new();
    std::io::Read::read_to_end(&mut down, &mut tail).unwrap();
    down.finish().unwrap();
    assert_eq!(tail, a2[3..]);
    let mut entries: Vec<(String, Option<SystemTime>)> = c
        .list(None)
        .unwrap()
        .into_iter()
        .map(|e| (e.name.clone(), e.modified.map(|t| t.to_system_time())))
        .collect();
    entries.sort();
    let at = |t: &str| Some(UNIX_EPOCH + Duration::from_secs(secs_of(t) as u64));
    assert_eq!(
        entries,
        [("a.txt".to_owned(), at(T2)), ("c.txt".to_owned(), at(T2))]
    );
    c.cwd("/").unwrap();
    assert!(c.mkdir("/@at/2026-11-24/new").is_err());
    drop(c);

    // A restart: the history is read back from its log.
    // bob's home is a directory of its own: its history is its own too.
    let bob = |f: &Fixture, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ftps"));
        command
            .arg("--ca-file")
            .arg(&f.ca)
            .args(["--timeout", "20", "-q"])
            .args(args)
            .current_dir(f.scratch.path())
            .env("FTPS_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        let out = run_within(&mut command, WAIT);
        assert!(out.status.success(), "bob: ftps {args:?}: {out:?}");
        out
    };
    let bob_url =
        |f: &Fixture, path: &str| format!("ftps://{BOB}@localhost:{}/{path}", f.site.addr.port());
    let local = f.scratch.path().join("bob.txt");
    now.store(secs_of("2026-12-01"), Ordering::SeqCst);
    std::fs::write(&local, "bob 1").unwrap();
    bob(&f, &["put", local.to_str().unwrap(), &bob_url(&f, "b.txt")]);
    now.store(secs_of("2026-12-02"), Ordering::SeqCst);
    std::fs::write(&local, "bob 2").unwrap();
    bob(&f, &["put", local.to_str().unwrap(), &bob_url(&f, "b.txt")]);
    let old = bob(
        &f,
        &[
            "get",
            "--at",
            "2026-12-01T12:00Z",
            &bob_url(&f, "b.txt"),
            "-",
        ],
    );
    assert_eq!(old.stdout, b"bob 1");
    let listed = bob(&f, &["ls", &bob_url(&f, "@at/2026-12-01T12:00Z/")]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("docs"),
        "bob sees alice's files"
    );

    f.site = Site::start(f._root.path(), bob_home.path(), &cert, &now);
    restore_all(&f, &cases, "restarted");
    let old = bob(
        &f,
        &[
            "get",
            "--at",
            "2026-12-01T12:00Z",
            &bob_url(&f, "b.txt"),
            "-",
        ],
    );
    assert_eq!(old.stdout, b"bob 1");
}
