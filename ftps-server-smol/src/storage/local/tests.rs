use super::*;
use futures_lite::future::block_on;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

fn setup() -> (tempfile::TempDir, LocalStorage) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("root")).unwrap();
    let storage = LocalStorage::open(dir.path().join("root")).unwrap();
    (dir, storage)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What is in the root on disk, apart from the reserved folder.
fn root_names(dir: &tempfile::TempDir) -> Vec<String> {
    let mut names = names_in(&dir.path().join("root"));
    names.retain(|n| n != RESERVED_NAME);
    names
}

/// The upload temp files on disk.
fn temp_names(dir: &tempfile::TempDir) -> Vec<String> {
    names_in(&dir.path().join("root").join(RESERVED_NAME))
}

async fn write_all(storage: &LocalStorage, path: &str, mode: WriteMode, data: &[u8]) -> u64 {
    let mut up = storage.open_write(path, mode).await.unwrap();
    up.write_all(data).await.unwrap();
    up.commit().await.unwrap()
}

async fn read_all(storage: &LocalStorage, path: &str, offset: u64) -> (Vec<u8>, u64) {
    let mut handle = storage.open_read(path, offset).await.unwrap();
    let mut out = Vec::new();
    handle.reader.read_to_end(&mut out).await.unwrap();
    (out, handle.size)
}

#[test]
fn create_commit_then_read_at_offset() {
    let (_dir, s) = setup();
    block_on(async {
        assert_eq!(
            write_all(&s, "/a.txt", WriteMode::Create, b"hello world").await,
            11
        );
        assert_eq!(
            read_all(&s, "/a.txt", 0).await,
            (b"hello world".to_vec(), 11)
        );
        assert_eq!(read_all(&s, "/a.txt", 6).await, (b"world".to_vec(), 11));
        assert_eq!(read_all(&s, "/a.txt", 100).await, (Vec::new(), 11));
        assert_eq!(
            read_all(&s, "/a.txt", i64::MAX as u64).await,
            (Vec::new(), 11)
        );
        let meta = s.metadata("/a.txt").await.unwrap();
        assert_eq!((meta.kind, meta.size), (FileKind::File, 11));
    });
}

#[test]
fn large_body_round_trips() {
    let (_dir, s) = setup();
    let data: Vec<u8> = (0..(3 * FILE_BUFFER_SIZE + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    block_on(async {
        let n = write_all(&s, "/big", WriteMode::Create, &data).await;
        assert_eq!(n, data.len() as u64);
        assert_eq!(read_all(&s, "/big", 0).await.0, data);
    });
}

#[test]
fn aborted_create_leaves_old_file_and_no_temp() {
    let (dir, s) = setup();
    block_on(async {
        write_all(&s, "/f", WriteMode::Create, b"old").await;
        let mut up = s.open_write("/f", WriteMode::Create).await.unwrap();
        up.write_all(b"new partial").await.unwrap();
        up.flush().await.unwrap();
        // The temp file exists while the upload runs, in the reserved folder only, and the
        // target is still the old one.
        assert_eq!(root_names(&dir), vec!["f".to_owned()]);
        let temps = temp_names(&dir);
        assert!(
            temps.len() == 1 && is_temp_file_name(&temps[0]),
            "{temps:?}"
        );
        assert_eq!(read_all(&s, "/f", 0).await.0, b"old");
        up.abort().await;
        assert_eq!(root_names(&dir), vec!["f".to_owned()]);
        assert!(temp_names(&dir).is_empty());
        assert_eq!(read_all(&s, "/f", 0).await.0, b"old");
    });
}

#[test]
fn dropped_create_removes_temp_eventually() {
    let (dir, s) = setup();
    block_on(async {
        let mut up = s.open_write("/g", WriteMode::Create).await.unwrap();
        up.write_all(b"x").await.unwrap();
        drop(up);
        for _ in 0..200 {
            if temp_names(&dir).is_empty() {
                assert!(root_names(&dir).is_empty());
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("temp file left: {:?}", temp_names(&dir));
    });
}

#[test]
fn create_replaces_and_keeps_mode() {
    let (dir, s) = setup();
    block_on(async {
        write_all(&s, "/f", WriteMode::Create, b"one").await;
        s.set_mode("/f", 0o640).await.unwrap();
        write_all(&s, "/f", WriteMode::Create, b"two!").await;
        assert_eq!(read_all(&s, "/f", 0).await.0, b"two!");
        assert_eq!(s.metadata("/f").await.unwrap().mode, Some(0o640));
        assert_eq!(root_names(&dir), vec!["f".to_owned()]);
    });
}

#[test]
fn create_new_takes_only_a_free_name_and_an_abort_frees_it() {
    let (dir, s) = setup();
    block_on(async {
        write_all(&s, "/f", WriteMode::Create, b"old").await;
        let err = s
            .open_write("/f", WriteMode::CreateNew)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StorageErrorKind::AlreadyExists);
        assert_eq!(read_all(&s, "/f", 0).await.0, b"old");
        // The name is held (empty) while the upload runs, and freed by an abort.
        let mut up = s.open_write("/g", WriteMode::CreateNew).await.unwrap();
        up.write_all(b"partial").await.unwrap();
        assert_eq!(s.metadata("/g").await.unwrap().size, 0);
        up.abort().await;
        assert_eq!(
            s.metadata("/g").await.unwrap_err().kind(),
            StorageErrorKind::NotFound
        );
        assert_eq!(write_all(&s, "/g", WriteMode::CreateNew, b"whole").await, 5);
        assert_eq!(read_all(&s, "/g", 0).await.0, b"whole");
    });
    assert!(temp_names(&dir).is_empty());
}

#[test]
fn append_and_resume_write_in_place() {
    let (_dir, s) = setup();
    block_on(async {
        write_all(&s, "/f", WriteMode::Append, b"abc").await;
        write_all(&s, "/f", WriteMode::Append, b"def").await;
        assert_eq!(read_all(&s, "/f", 0).await.0, b"abcdef");
        write_all(&s, "/f", WriteMode::Resume(4), b"XYZW").await;
        assert_eq!(read_all(&s, "/f", 0).await.0, b"abcdXYZW");
        // An aborted append keeps what arrived.
        let mut up = s.open_write("/f", WriteMode::Append).await.unwrap();
        up.write_all(b"!!").await.unwrap();
        up.abort().await;
        assert_eq!(read_all(&s, "/f", 0).await.0, b"abcdXYZW!!");
        let err = s
            .open_write("/missing", WriteMode::Resume(3))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StorageErrorKind::NotFound);
    });
}

#[test]
fn bodies_around_the_buffered_head_round_trip() {
    let (_dir, s) = setup();
    block_on(async {
        // All in the head; exactly the head; one byte more (streams, the head first); written in pieces.
        for len in [
            0,
            1,
            FILE_BUFFER_SIZE - 1,
            FILE_BUFFER_SIZE,
            FILE_BUFFER_SIZE + 1,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut up = s.open_write("/b", WriteMode::Create).await.unwrap();
            for piece in data.chunks(7_777) {
                up.write_all(piece).await.unwrap();
            }
            assert_eq!(up.commit().await.unwrap(), len as u64);
            assert_eq!(read_all(&s, "/b", 0).await.0, data, "length {len}");
        }
    });
}

#[test]
fn a_dropped_append_still_lands_what_arrived() {
    let (dir, s) = setup();
    block_on(async {
        write_all(&s, "/f", WriteMode::Append, b"abc").await;
        let mut up = s.open_write("/f", WriteMode::Append).await.unwrap();
        up.write_all(b"def").await.unwrap();
        // The transfer task was cancelled: no commit, no abort.
        drop(up);
    });
    let path = dir.path().join("root/f");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read(&path).unwrap() != b"abcdef" {
        assert!(
            std::time::Instant::now() < deadline,
            "the buffered bytes never landed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn directories_and_listing() {
    let (_dir, s) = setup();
    block_on(async {
        s.mkdir("/d").await.unwrap();
        assert_eq!(
            s.mkdir("/d").await.unwrap_err().kind(),
            StorageErrorKind::AlreadyExists
        );
        assert_eq!(
            s.mkdir("/x/y").await.unwrap_err().kind(),
            StorageErrorKind::NotFound
        );
        write_all(&s, "/d/f", WriteMode::Create, b"12345").await;
        let mut list = s.list("/d").await.unwrap();
        assert_eq!(list.len(), 1);
        let entry = list.remove(0);
        assert_eq!((entry.name.as_str(), entry.metadata.size), ("f", 5));
        assert_eq!(entry.metadata.kind, FileKind::File);
        let root = s.list("/").await.unwrap();
        assert_eq!(root.len(), 1);
        assert_eq!(root[0].metadata.kind, FileKind::Directory);
        assert_eq!(
            s.rmdir("/d").await.unwrap_err().kind(),
            StorageErrorKind::NotEmpty
        );
        assert_eq!(
            s.delete("/d").await.unwrap_err().kind(),
            StorageErrorKind::IsADirectory
        );
        assert_eq!(
            s.open_read("/d", 0).await.err().unwrap().kind(),
            StorageErrorKind::IsADirectory
        );
        assert_eq!(
            s.open_write("/d", WriteMode::Create)
                .await
                .err()
                .unwrap()
                .kind(),
            StorageErrorKind::IsADirectory
        );
        s.rename("/d/f", "/g").await.unwrap();
        s.delete("/g").await.unwrap();
        s.rmdir("/d").await.unwrap();
        assert!(s.list("/").await.unwrap().is_empty());
        assert_eq!(
            s.metadata("/g").await.unwrap_err().kind(),
            StorageErrorKind::NotFound
        );
    });
}

#[test]
fn set_modified_and_mode() {
    let (_dir, s) = setup();
    block_on(async {
        write_all(&s, "/f", WriteMode::Create, b"x").await;
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        s.set_modified("/f", when).await.unwrap();
        assert_eq!(s.metadata("/f").await.unwrap().modified, Some(when));
        // setuid and sticky bits from a client are dropped.
        s.set_mode("/f", 0o4755).await.unwrap();
        assert_eq!(s.metadata("/f").await.unwrap().mode, Some(0o755));
    });
}

#[test]
fn escapes_are_refused() {
    let (dir, s) = setup();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("root/abs-link"))
        .unwrap();
    std::os::unix::fs::symlink("../secret", dir.path().join("root/rel-link")).unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("root/up")).unwrap();
    block_on(async {
        for path in ["/../secret", "/a/../../secret", "/sec\0ret", "/..\\secret"] {
            let err = s.open_read(path, 0).await.err().unwrap();
            assert_eq!(err.kind(), StorageErrorKind::InvalidName, "{path:?}");
        }
        for path in ["/abs-link", "/rel-link", "/up/secret"] {
            let err = s.open_read(path, 0).await.err().unwrap();
            assert_eq!(
                err.kind(),
                StorageErrorKind::PermissionDenied,
                "{path:?}: {err}"
            );
            let err = s.open_write(path, WriteMode::Create).await.err().unwrap();
            assert_ne!(err.kind(), StorageErrorKind::NotFound, "{path:?}");
        }
        let err = s
            .open_write("/up/secret", WriteMode::Append)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StorageErrorKind::PermissionDenied);
        // An absolute-looking virtual path is still relative to the root.
        assert_eq!(
            s.open_read(&format!("/{}", dir.path().join("secret").display()), 0)
                .await
                .err()
                .unwrap()
                .kind(),
            StorageErrorKind::NotFound
        );
        // Listing shows the escaping links as symlinks without following them.
        let list = s.list("/").await.unwrap();
        assert!(list.iter().all(|e| e.metadata.kind == FileKind::Symlink));
    });
    assert_eq!(
        std::fs::read(dir.path().join("secret")).unwrap(),
        b"outside"
    );
}

#[test]
fn subdir_is_confined() {
    let (dir, s) = setup();
    block_on(async {
        s.mkdir("/home").await.unwrap();
        write_all(&s, "/top", WriteMode::Create, b"t").await;
        let home = s.open_subdir("/home").await.unwrap();
        write_all(&home, "/inside", WriteMode::Create, b"i").await;
        assert!(dir.path().join("root/home/inside").exists());
        assert_eq!(
            home.metadata("/top").await.unwrap_err().kind(),
            StorageErrorKind::NotFound
        );
        assert_eq!(
            home.open_read("/../top", 0).await.err().unwrap().kind(),
            StorageErrorKind::InvalidName
        );
    });
}

#[test]
fn cleanup_removes_only_old_temp_files_of_the_reserved_folder() {
    let (dir, s) = setup();
    let root = dir.path().join("root");
    let reserved = root.join(RESERVED_NAME);
    std::fs::create_dir(&reserved).unwrap();
    // A crash leftover, something else that is not ours, and users' files named like temp files
    // (the pattern of earlier versions, and today's) outside the reserved folder.
    std::fs::write(reserved.join("upload.0123456789abcdef.tmp"), b"x").unwrap();
    std::fs::write(reserved.join("notes"), b"x").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join(".ftps-upload.mine.tmp"), b"user").unwrap();
    std::fs::write(root.join("sub/.ftps-upload.0123456789abcdef.tmp"), b"user").unwrap();
    std::fs::write(root.join("upload.fedcba9876543210.tmp"), b"user").unwrap();
    block_on(async {
        // Files modified after the cut-off are uploads of this process: kept.
        let past = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(s.cleanup_temp_files(past).await.unwrap(), 0);
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(s.cleanup_temp_files(future).await.unwrap(), 1);
    });
    assert_eq!(temp_names(&dir), vec!["notes".to_owned()]);
    assert_eq!(
        root_names(&dir),
        vec![
            ".ftps-upload.mine.tmp".to_owned(),
            "sub".to_owned(),
            "upload.fedcba9876543210.tmp".to_owned()
        ]
    );
}

#[test]
fn a_users_file_named_like_a_temp_file_survives_a_restart() {
    let (dir, s) = setup();
    block_on(async {
        let n = write_all(&s, "/.ftps-upload.mine.tmp", WriteMode::Create, b"mine").await;
        assert_eq!(n, 4);
    });
    // A restart: the storage opened again and cleaned up with a start time after the upload.
    let later = SystemTime::now() + std::time::Duration::from_secs(3600);
    let again = LocalStorage::open(dir.path().join("root")).unwrap();
    block_on(async {
        assert_eq!(again.cleanup_temp_files(later).await.unwrap(), 0);
        assert_eq!(
            read_all(&again, "/.ftps-upload.mine.tmp", 0).await.0,
            b"mine"
        );
    });
}

#[test]
fn the_reserved_folder_is_hidden_and_out_of_reach() {
    let (dir, s) = setup();
    block_on(async {
        s.mkdir("/d").await.unwrap();
        let mut up = s.open_write("/d/partial", WriteMode::Create).await.unwrap();
        up.write_all(b"half").await.unwrap();
        up.flush().await.unwrap();
        let temp = temp_names(&dir).pop().expect("a temp file while uploading");
        // Nothing in any listing but the directory, and no file under its final name yet.
        let names: Vec<String> = s
            .list("/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["d".to_owned()]);
        assert!(s.list("/d").await.unwrap().is_empty());
        let hidden = format!("/{RESERVED_NAME}/{temp}");
        let refused = |r: Result<(), StorageError>| {
            assert_eq!(r.unwrap_err().kind(), StorageErrorKind::InvalidName);
        };
        refused(s.open_read(&hidden, 0).await.map(drop));
        refused(s.metadata(&hidden).await.map(drop));
        refused(s.metadata(&format!("/{RESERVED_NAME}")).await.map(drop));
        refused(s.list(&format!("/{RESERVED_NAME}")).await.map(drop));
        refused(s.rename(&hidden, "/stolen").await);
        refused(s.delete(&hidden).await);
        refused(s.rmdir(&format!("/{RESERVED_NAME}")).await);
        refused(s.mkdir(&format!("/d/{RESERVED_NAME}")).await);
        refused(s.open_write(&hidden, WriteMode::Append).await.map(drop));
        assert_eq!(up.commit().await.unwrap(), 4);
        assert_eq!(read_all(&s, "/d/partial", 0).await.0, b"half");
        assert!(temp_names(&dir).is_empty());
    });
}

#[test]
fn the_reserved_folder_appears_with_the_first_atomic_upload_only() {
    let (dir, s) = setup();
    let reserved = dir.path().join("root").join(RESERVED_NAME);
    block_on(async {
        assert_eq!(s.cleanup_temp_files(SystemTime::now()).await.unwrap(), 0);
        s.mkdir("/d").await.unwrap();
        write_all(&s, "/d/a", WriteMode::Append, b"in place").await;
        assert!(!reserved.exists());
        write_all(&s, "/d/f", WriteMode::Create, b"atomic").await;
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&reserved).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_subdir_storage_keeps_its_temp_files_in_the_top_folder() {
    let (dir, s) = setup();
    block_on(async {
        s.mkdir("/home").await.unwrap();
        let home = s.open_subdir("/home").await.unwrap();
        let mut up = home.open_write("/f", WriteMode::Create).await.unwrap();
        up.write_all(b"x").await.unwrap();
        assert_eq!(temp_names(&dir).len(), 1);
        assert_eq!(
            names_in(&dir.path().join("root/home")),
            Vec::<String>::new()
        );
        up.commit().await.unwrap();
    });
    assert_eq!(
        names_in(&dir.path().join("root/home")),
        vec!["f".to_owned()]
    );
}

#[test]
fn commit_with_sync_on_lands_the_file() {
    let (dir, s) = setup();
    let s = s.with_sync_on_commit(true);
    block_on(async {
        s.mkdir("/d").await.unwrap();
        write_all(&s, "/d/f", WriteMode::Create, b"synced").await;
        write_all(&s, "/top", WriteMode::Create, b"synced").await;
    });
    assert_eq!(
        std::fs::read(dir.path().join("root/d/f")).unwrap(),
        b"synced"
    );
    assert_eq!(
        std::fs::read(dir.path().join("root/top")).unwrap(),
        b"synced"
    );
    assert!(temp_names(&dir).is_empty());
}

/// The cost of `[storage] fsync`, on the disk that holds `FTPS_FSYNC_DIR` (default: the system temp
/// directory; use a real disk, not tmpfs). Not a test: run it by hand, in one run, and compare ratios:
/// `FTPS_FSYNC_DIR=/var/tmp cargo test -p ftps-server-smol --lib fsync_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn fsync_cost() {
    let base = std::env::var_os("FTPS_FSYNC_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let small = vec![7u8; 4096];
    let big = vec![9u8; 64 << 20];
    for round in 0..2 {
        for sync in [false, true] {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let s = LocalStorage::open(dir.path())
                .unwrap()
                .with_sync_on_commit(sync);
            block_on(async {
                let start = std::time::Instant::now();
                for i in 0..1000 {
                    write_all(&s, &format!("/f{i}"), WriteMode::Create, &small).await;
                }
                let many = start.elapsed();
                let start = std::time::Instant::now();
                write_all(&s, "/big", WriteMode::Create, &big).await;
                let one = start.elapsed();
                eprintln!(
                    "round {round} fsync={sync}: 1000 x 4 KiB {many:?} ({:.0} files/s), 64 MiB {one:?} ({:.0} MB/s)",
                    1000.0 / many.as_secs_f64(),
                    64.0 * 1.048_576 / one.as_secs_f64()
                );
            });
        }
    }
}
