//! The S3 backend against moto's S3 server on loopback (skipped when moto is not installed), and the HTTP client
//! against scripted misbehaving servers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use ftps_testkit::{pattern, Moto};
use futures_lite::future::block_on;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::requests::parse_http_date;
use super::*;
use crate::storage::Subtree;

pub(super) const MIB: usize = 1024 * 1024;

pub(super) fn options(endpoint: String, bucket: &str, prefix: &str) -> S3Options {
    S3Options {
        endpoint,
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        path_style: true,
        access_key_id: Moto::ACCESS_KEY.to_owned(),
        secret_access_key: Moto::SECRET_KEY.to_owned(),
        part_size: MIN_PART_SIZE,
        retry_base_delay: Duration::from_millis(10),
        ..S3Options::default()
    }
}

pub(super) async fn storage(moto: &Moto, bucket: &str, prefix: &str) -> S3Storage {
    let s3 = S3Storage::new(&options(moto.endpoint(), bucket, prefix)).unwrap();
    s3.create_bucket().await.unwrap();
    s3.check().await.unwrap();
    s3
}

pub(super) async fn write(s: &dyn Storage, path: &str, mode: WriteMode, data: &[u8]) -> u64 {
    let mut upload = s.open_write(path, mode).await.unwrap();
    // Odd-sized writes, as a data connection delivers them.
    for chunk in data.chunks(100_003) {
        upload.write_all(chunk).await.unwrap();
    }
    upload.flush().await.unwrap();
    upload.commit().await.unwrap()
}

pub(super) async fn read(s: &dyn Storage, path: &str, offset: u64) -> (Vec<u8>, u64) {
    let mut handle = s.open_read(path, offset).await.unwrap();
    let mut data = Vec::new();
    handle.reader.read_to_end(&mut data).await.unwrap();
    (data, handle.size)
}

pub(super) fn kind<T>(result: Result<T, StorageError>) -> StorageErrorKind {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

pub(super) fn names(entries: &[DirEntry]) -> Vec<(String, FileKind)> {
    let mut names: Vec<_> = entries
        .iter()
        .map(|e| (e.name.clone(), e.metadata.kind))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    names
}

#[test]
fn files_directories_rename_delete_and_errors() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = storage(&moto, "files", "ftp").await;
        let s: &dyn Storage = &s3;
        assert_eq!(s.metadata("/").await.unwrap().kind, FileKind::Directory);
        assert!(s.list("/").await.unwrap().is_empty());

        // MKD writes a marker: the empty directory exists and lists.
        s.mkdir("/d").await.unwrap();
        assert_eq!(kind(s.mkdir("/d").await), StorageErrorKind::AlreadyExists);
        assert_eq!(kind(s.mkdir("/x/y").await), StorageErrorKind::NotFound);
        assert_eq!(s.metadata("/d").await.unwrap().kind, FileKind::Directory);
        assert!(s.list("/d").await.unwrap().is_empty());

        // A small file is one PUT; SIZE/MDTM from HEAD; RETR with and without REST.
        let data = pattern(100_000, 1);
        assert_eq!(
            write(s, "/d/a.bin", WriteMode::Create, &data).await,
            100_000
        );
        let meta = s.metadata("/d/a.bin").await.unwrap();
        assert_eq!((meta.kind, meta.size), (FileKind::File, 100_000));
        let age = SystemTime::now()
            .duration_since(meta.modified.unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(300), "{age:?}");
        assert_eq!(read(s, "/d/a.bin", 0).await, (data.clone(), 100_000));
        assert_eq!(
            read(s, "/d/a.bin", 99_000).await,
            (data[99_000..].to_vec(), 100_000)
        );
        assert_eq!(read(s, "/d/a.bin", 100_000).await, (Vec::new(), 100_000));
        assert_eq!(read(s, "/d/a.bin", 200_000).await, (Vec::new(), 100_000));
        assert_eq!(
            kind(s.open_read("/d", 0).await),
            StorageErrorKind::IsADirectory
        );
        assert_eq!(
            kind(s.open_read("/nope", 0).await),
            StorageErrorKind::NotFound
        );
        assert_eq!(
            kind(s.open_write("/d", WriteMode::Create).await),
            StorageErrorKind::IsADirectory
        );
        assert_eq!(
            kind(s.open_write("/missing/f", WriteMode::Create).await),
            StorageErrorKind::NotFound
        );

        // Listings: files with sizes and times, directories from common prefixes, the marker hidden.
        s.mkdir("/d/sub").await.unwrap();
        write(s, "/top.txt", WriteMode::Create, b"top").await;
        assert_eq!(
            names(&s.list("/d").await.unwrap()),
            vec![
                ("a.bin".to_owned(), FileKind::File),
                ("sub".to_owned(), FileKind::Directory)
            ]
        );
        assert_eq!(
            names(&s.list("/").await.unwrap()),
            vec![
                ("d".to_owned(), FileKind::Directory),
                ("top.txt".to_owned(), FileKind::File)
            ]
        );
        assert_eq!(
            kind(s.list("/top.txt").await),
            StorageErrorKind::NotADirectory
        );
        assert_eq!(kind(s.list("/nothing").await), StorageErrorKind::NotFound);

        // STOU refuses a taken name; APPE and REST+STOR build a new object from the old bytes.
        assert_eq!(
            kind(s.open_write("/top.txt", WriteMode::CreateNew).await),
            StorageErrorKind::AlreadyExists
        );
        assert_eq!(
            write(s, "/top.txt", WriteMode::Append, b" and more").await,
            9
        );
        assert_eq!(read(s, "/top.txt", 0).await.0, b"top and more");
        write(s, "/top.txt", WriteMode::Resume(3), b"!").await;
        assert_eq!(read(s, "/top.txt", 0).await.0, b"top!");
        assert_eq!(
            kind(s.open_write("/none", WriteMode::Resume(1)).await),
            StorageErrorKind::NotFound
        );

        // RNFR/RNTO of a file: copy then delete (directories: `directory_rename_copies_every_key`).
        s.rename("/d/a.bin", "/d/sub/b.bin").await.unwrap();
        assert_eq!(
            kind(s.metadata("/d/a.bin").await),
            StorageErrorKind::NotFound
        );
        assert_eq!(read(s, "/d/sub/b.bin", 0).await.0, data);
        assert_eq!(
            kind(s.rename("/d", "/d/sub/e").await),
            StorageErrorKind::InvalidName
        );
        assert_eq!(
            kind(s.rename("/gone", "/e").await),
            StorageErrorKind::NotFound
        );
        assert_eq!(
            kind(s.rename("/top.txt", "/d/sub").await),
            StorageErrorKind::IsADirectory
        );

        // RMD refuses a non-empty directory; DELE keeps the directory it empties.
        assert_eq!(kind(s.rmdir("/d").await), StorageErrorKind::NotEmpty);
        assert_eq!(kind(s.delete("/d").await), StorageErrorKind::IsADirectory);
        s.delete("/d/sub/b.bin").await.unwrap();
        assert_eq!(
            kind(s.delete("/d/sub/b.bin").await),
            StorageErrorKind::NotFound
        );
        assert_eq!(
            s.metadata("/d/sub").await.unwrap().kind,
            FileKind::Directory
        );
        s.rmdir("/d/sub").await.unwrap();
        assert_eq!(s.metadata("/d").await.unwrap().kind, FileKind::Directory);
        s.rmdir("/d").await.unwrap();
        assert_eq!(kind(s.rmdir("/d").await), StorageErrorKind::NotFound);
        assert_eq!(
            kind(s.rmdir("/top.txt").await),
            StorageErrorKind::NotADirectory
        );

        // Unsupported and refused operations, clearly.
        assert_eq!(
            kind(s.set_modified("/top.txt", SystemTime::UNIX_EPOCH).await),
            StorageErrorKind::Unsupported
        );
        assert_eq!(
            kind(s.set_mode("/top.txt", 0o600).await),
            StorageErrorKind::Unsupported
        );
        assert_eq!(
            kind(s.metadata("/../x").await),
            StorageErrorKind::InvalidName
        );
        assert_eq!(
            kind(s.metadata("/.ftps-tmp").await),
            StorageErrorKind::InvalidName
        );

        // A user's home is a sub-prefix, through the same Subtree view as on disk; the prefix keeps the root
        // apart from the rest of the bucket.
        s.mkdir("/alice").await.unwrap();
        let home = Subtree::new(Arc::new(s3.clone()), "/alice");
        write(&home, "/mine.txt", WriteMode::Create, b"alice").await;
        assert_eq!(read(s, "/alice/mine.txt", 0).await.0, b"alice");
        assert_eq!(names(&home.list("/").await.unwrap()).len(), 1);
        let whole = storage(&moto, "files", "").await;
        assert_eq!(
            names(&whole.list("/").await.unwrap()),
            vec![("ftp".to_owned(), FileKind::Directory)]
        );
        assert_eq!(read(&whole, "/ftp/alice/mine.txt", 0).await.0, b"alice");
    });
}

#[test]
fn listing_paginates_past_1000_keys() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = storage(&moto, "many", "").await;
        s3.mkdir("/many").await.unwrap();
        // 1,100 files and 5 directories, 4 requests at a time.
        let keys: Vec<String> = (0..1100).map(|i| format!("many/f{i:05}")).collect();
        for batch in keys.chunks(4) {
            let puts = batch.iter().map(|key| s3.inner.put(key, b"x"));
            for put in puts.collect::<Vec<_>>() {
                put.await.unwrap();
            }
        }
        for i in 0..5 {
            s3.inner
                .put(&format!("many/d{i}/inner"), b"y")
                .await
                .unwrap();
        }
        let entries = s3.list("/many").await.unwrap();
        assert_eq!(entries.len(), 1105);
        let dirs = entries
            .iter()
            .filter(|e| e.metadata.kind == FileKind::Directory)
            .count();
        assert_eq!(dirs, 5);
        let mut files: Vec<_> = entries
            .iter()
            .filter(|e| e.metadata.kind == FileKind::File)
            .map(|e| e.name.clone())
            .collect();
        files.sort();
        files.dedup();
        assert_eq!(files.len(), 1100);
        assert_eq!(kind(s3.rmdir("/many").await), StorageErrorKind::NotEmpty);
    });
}

#[test]
fn directory_rename_copies_every_key() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let mut opts = options(moto.endpoint(), "dirs", "ftp");
        opts.max_rename_keys = 20;
        let s3 = S3Storage::new(&opts).unwrap();
        s3.create_bucket().await.unwrap();
        let s: &dyn Storage = &s3;
        s.mkdir("/a").await.unwrap();
        s.mkdir("/a/empty").await.unwrap();
        s.mkdir("/a/sub").await.unwrap();
        for i in 0..12 {
            write(
                s,
                &format!("/a/sub/f{i}"),
                WriteMode::Create,
                format!("{i}").as_bytes(),
            )
            .await;
        }
        write(s, "/a/x", WriteMode::Create, b"x").await;
        s.mkdir("/full").await.unwrap();
        write(s, "/full/y", WriteMode::Create, b"y").await;
        s.mkdir("/emptytarget").await.unwrap();

        // Refused: into itself, onto a non-empty directory, onto a file.
        assert_eq!(
            kind(s.rename("/a", "/a/sub/in").await),
            StorageErrorKind::InvalidName
        );
        assert_eq!(
            kind(s.rename("/a", "/full").await),
            StorageErrorKind::NotEmpty
        );
        assert_eq!(
            kind(s.rename("/a", "/full/y").await),
            StorageErrorKind::NotADirectory
        );
        assert_eq!(
            kind(s.rename("/a", "/none/b").await),
            StorageErrorKind::NotFound
        );

        s.rename("/a", "/b").await.unwrap();
        assert_eq!(kind(s.metadata("/a").await), StorageErrorKind::NotFound);
        assert_eq!(
            names(&s.list("/b").await.unwrap()),
            [
                ("empty".to_owned(), FileKind::Directory),
                ("sub".to_owned(), FileKind::Directory),
                ("x".to_owned(), FileKind::File)
            ]
        );
        assert_eq!(s.list("/b/sub").await.unwrap().len(), 12);
        assert_eq!(read(s, "/b/sub/f7", 0).await.0, b"7");
        assert!(s.list("/b/empty").await.unwrap().is_empty());
        // Onto an empty directory: replaced, as POSIX rename does.
        s.rename("/b/sub", "/emptytarget").await.unwrap();
        assert_eq!(s.list("/emptytarget").await.unwrap().len(), 12);
        assert_eq!(
            names(&s.list("/").await.unwrap()),
            [
                ("b".to_owned(), FileKind::Directory),
                ("emptytarget".to_owned(), FileKind::Directory),
                ("full".to_owned(), FileKind::Directory)
            ]
        );

        // Above the bound (20 keys here): refused before anything is copied.
        for i in 12..25 {
            write(s, &format!("/emptytarget/f{i}"), WriteMode::Create, b"z").await;
        }
        let e = s.rename("/emptytarget", "/c").await.unwrap_err();
        assert!(e.to_string().contains("more than 20 objects"), "{e}");
        assert_eq!(kind(s.metadata("/c").await), StorageErrorKind::NotFound);
        assert_eq!(s.list("/emptytarget").await.unwrap().len(), 25);
    });
}

/// A proxy in front of moto that refuses (403 AccessDenied, not passed on) every server-side copy whose request
/// head contains `poison`, and passes everything else on, one request per connection (it asks moto to close).
fn copy_refusing_proxy(upstream: String, poison: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                let head_end = loop {
                    if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at;
                    }
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                if head.contains("x-amz-copy-source") && head.contains(poison) {
                    let body = "<Error><Code>AccessDenied</Code><Message>refused by the test</Message></Error>";
                    let _ = write!(
                        client,
                        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < head_end + 4 + length {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let _ = server.write_all(&request[..head_end]);
                let _ = server.write_all(b"\r\nConnection: close");
                let _ = server.write_all(&request[head_end..]);
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    format!("http://{addr}")
}

/// A directory rename whose copying fails part way (after a first batch of copies succeeded) removes every copy
/// it made: one folder remains, as it was, and nothing under it is lost.
#[test]
fn a_failed_directory_rename_removes_its_copies() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = storage(&moto, "halfway", "ftp").await;
        let s: &dyn Storage = &s3;
        s.mkdir("/a").await.unwrap();
        s.mkdir("/a/sub").await.unwrap();
        for i in 0u8..12 {
            write(s, &format!("/a/sub/f{i:02}"), WriteMode::Create, &[i; 100]).await;
        }
        // Listed last (after "/a/", "/a/sub/" and the twelve files): in the second batch of copies.
        write(s, "/a/sub/poison", WriteMode::Create, b"p").await;

        let proxied = S3Storage::new(&options(
            copy_refusing_proxy(moto.endpoint(), "poison"),
            "halfway",
            "ftp",
        ))
        .unwrap();
        let e = proxied.rename("/a", "/b").await.unwrap_err();
        assert!(e.to_string().contains("AccessDenied"), "{e}");

        assert_eq!(kind(s.metadata("/b").await), StorageErrorKind::NotFound);
        let stray = s3
            .inner
            .list_page("ftp/b", false, None, 1000)
            .await
            .unwrap();
        assert!(
            stray.objects.is_empty(),
            "copies left behind: {:?}",
            stray.objects
        );
        assert_eq!(
            names(&s.list("/").await.unwrap()),
            [("a".to_owned(), FileKind::Directory)]
        );
        assert_eq!(s.list("/a/sub").await.unwrap().len(), 13);
        for i in 0u8..12 {
            assert_eq!(read(s, &format!("/a/sub/f{i:02}"), 0).await.0, [i; 100]);
        }
        assert_eq!(read(s, "/a/sub/poison", 0).await.0, b"p");
    });
}

#[test]
fn multipart_upload_commits_and_abort_keeps_the_old_object() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = storage(&moto, "big", "").await;
        let s: &dyn Storage = &s3;
        // 17 MiB + a bit: four parts of 5 MiB (the test part size), the last one short.
        let data = pattern(17 * MIB + 12_345, 7);
        assert_eq!(
            write(s, "/big.bin", WriteMode::Create, &data).await,
            data.len() as u64
        );
        let (back, size) = read(s, "/big.bin", 0).await;
        assert_eq!(size, data.len() as u64);
        assert!(back == data, "multipart object differs");
        let (tail, _) = read(s, "/big.bin", 16 * MIB as u64).await;
        assert!(tail == data[16 * MIB..], "ranged read differs");

        // An upload of 11 MiB that is aborted after its parts went out: the old object stays, whole.
        let mut upload = s.open_write("/big.bin", WriteMode::Create).await.unwrap();
        upload.write_all(&pattern(11 * MIB, 9)).await.unwrap();
        upload.abort().await;
        let (after, _) = read(s, "/big.bin", 0).await;
        assert!(after == data, "an aborted upload changed the object");

        // Until commit, nothing is visible: a new name does not exist while its upload runs.
        let mut upload = s.open_write("/new.bin", WriteMode::Create).await.unwrap();
        upload.write_all(&pattern(6 * MIB, 3)).await.unwrap();
        assert_eq!(
            kind(s.metadata("/new.bin").await),
            StorageErrorKind::NotFound
        );
        upload.commit().await.unwrap();
        assert_eq!(s.metadata("/new.bin").await.unwrap().size, 6 * MIB as u64);

        // A rename above the multipart-copy threshold (5 MiB here) is copied server-side in parts.
        let mut o = options(moto.endpoint(), "big", "");
        o.multipart_copy_threshold = MIN_PART_SIZE as u64;
        let small_copies = S3Storage::new(&o).unwrap();
        small_copies.rename("/big.bin", "/moved.bin").await.unwrap();
        assert_eq!(
            kind(s.metadata("/big.bin").await),
            StorageErrorKind::NotFound
        );
        let (moved, size) = read(s, "/moved.bin", 0).await;
        assert_eq!(size, data.len() as u64);
        assert!(moved == data, "multipart copy differs");

        // APPE onto a multipart object streams the old bytes through the new upload.
        write(s, "/new.bin", WriteMode::Append, b"tail").await;
        let (appended, size) = read(s, "/new.bin", 6 * MIB as u64 - 2).await;
        assert_eq!(size, 6 * MIB as u64 + 4);
        assert_eq!(appended.len(), 6);
        assert_eq!(&appended[2..], b"tail");
    });
}

/// A one-shot scripted HTTP server: answers each connection's requests with the next canned responses.
fn scripted(responses: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        for response in responses {
            let Ok((mut stream, _)) = listener.accept() else {
                break;
            };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response);
            served += 1;
        }
        served
    });
    (format!("http://{addr}"), handle)
}

fn scripted_storage(endpoint: String) -> S3Storage {
    let mut options = options(endpoint, "b", "");
    options.timeout = Duration::from_secs(5);
    S3Storage::new(&options).unwrap()
}

#[test]
fn throttling_and_server_errors_are_retried_with_backoff() {
    let (endpoint, server) = scripted(vec![
        b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 500 Internal Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\nLast-Modified: Sun, 06 Dec 2026 17:38:26 GMT\r\nConnection: close\r\n\r\n",
    ]);
    let s3 = scripted_storage(endpoint);
    let meta = block_on(s3.metadata("/f")).unwrap();
    assert_eq!(meta.size, 42);
    let expected = jiff::Timestamp::from_second(1_796_578_706).unwrap();
    assert_eq!(meta.modified, Some(SystemTime::from(expected)));
    assert_eq!(server.join().unwrap(), 3);
}

#[test]
fn persistent_throttling_ends_as_an_error_not_a_hang() {
    let response: &'static [u8] =
        b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (endpoint, server) = scripted(vec![response; MAX_ATTEMPTS as usize]);
    let s3 = scripted_storage(endpoint);
    let error = block_on(s3.metadata("/f")).unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Other);
    assert!(error.message().contains("503"), "{error}");
    assert_eq!(server.join().unwrap(), MAX_ATTEMPTS as usize);
}

#[test]
fn malformed_responses_are_errors_not_panics() {
    let huge_header: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
            "a".repeat(http::MAX_HEAD + 1)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    for response in [
        &b"garbage\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n<ListBucketResult>",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot xml!!",
        huge_header,
    ] {
        let (endpoint, server) = scripted(vec![response; MAX_ATTEMPTS as usize]);
        let s3 = scripted_storage(endpoint);
        let result = block_on(s3.list("/"));
        assert!(
            result.is_err(),
            "{:?}",
            String::from_utf8_lossy(&response[..40.min(response.len())])
        );
        // Some failures end after one connection: the server thread may still wait in accept(), so no join.
        drop((s3, server));
    }
}

#[test]
fn a_download_cut_short_or_stalled_is_an_error() {
    // The server closes after 5 of 10 bytes: the reader says so, never a short file.
    let (endpoint, server) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"]);
    let s3 = scripted_storage(endpoint);
    let mut handle = block_on(s3.open_read("/f", 0)).unwrap();
    let mut data = Vec::new();
    let e = block_on(handle.reader.read_to_end(&mut data)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(data, b"hello");
    drop(server.join());

    // The server sends 5 bytes and then nothing, holding the connection: the read times out.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stall = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut o = options(format!("http://{addr}"), "b", "");
    o.timeout = Duration::from_millis(500);
    let s3 = S3Storage::new(&o).unwrap();
    let mut handle = block_on(s3.open_read("/f", 0)).unwrap();
    let mut data = Vec::new();
    let e = block_on(handle.reader.read_to_end(&mut data)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    drop(stall.join());
}

#[test]
fn chunked_bodies_are_decoded() {
    let (endpoint, server) = scripted(vec![
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-6/10\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
    ]);
    let s3 = scripted_storage(endpoint);
    let (data, size) = block_on(async {
        let mut handle = s3.open_read("/f", 2).await.unwrap();
        let mut data = Vec::new();
        handle.reader.read_to_end(&mut data).await.unwrap();
        (data, handle.size)
    });
    assert_eq!((data.as_slice(), size), (&b"abcde"[..], 10));
    assert_eq!(server.join().unwrap(), 1);
}

#[test]
fn endpoints_and_options_are_checked() {
    let mut o = options("ftp://s3.example.com".to_owned(), "b", "");
    assert!(S3Storage::new(&o).is_err(), "only http and https");
    o.endpoint = "https://s3.example.com".to_owned();
    o.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(S3Storage::new(&o).is_err(), "a missing ca_file is an error");
    o.ca_file = None;
    o.endpoint = "not a url".to_owned();
    assert!(S3Storage::new(&o).is_err());
    o.endpoint = "http://127.0.0.1:9000".to_owned();
    o.bucket = String::new();
    assert!(S3Storage::new(&o).is_err());
    o.bucket = "b".to_owned();
    o.part_size = 1024;
    assert!(S3Storage::new(&o).is_err());
    o.part_size = MIN_PART_SIZE;
    assert!(S3Storage::new(&o).is_ok());
    assert_eq!(
        parse_iso8601("2026-12-06T17:38:26.000Z"),
        Some(SystemTime::from(
            jiff::Timestamp::from_second(1_796_578_706).unwrap()
        ))
    );
    assert_eq!(parse_http_date("yesterday"), None);
}

#[test]
fn https_endpoint_with_a_private_ca() {
    let dir = ftps_testkit::TempDir::new("moto-tls");
    let cert = ftps_testkit::TestCert::generate();
    let Some(moto) = Moto::start_tls(&cert, dir.path()) else {
        return;
    };
    let mut o = options(moto.endpoint(), "tls", "");
    // Not trusted without the CA: the handshake fails (retried, then an error).
    let untrusted = S3Storage::new(&o).unwrap();
    assert!(block_on(untrusted.create_bucket()).is_err());
    o.ca_file = Some(dir.path().join("cert.pem"));
    let s3 = S3Storage::new(&o).unwrap();
    block_on(async {
        s3.create_bucket().await.unwrap();
        let data = pattern(6 * MIB + 5, 4);
        write(&s3, "/over-tls.bin", WriteMode::Create, &data).await;
        let (back, _) = read(&s3, "/over-tls.bin", MIB as u64).await;
        assert!(back == data[MIB..], "differs over TLS");
        assert_eq!(names(&s3.list("/").await.unwrap()).len(), 1);
    });
}

/// An upload's checks come from one listing: the object's own size, and whether a directory of that name exists,
/// whatever siblings share the name's prefix (`x.bak` and `x-1` sort between `x` and `x/`).
#[test]
fn one_listing_tells_a_file_from_a_directory_of_the_same_name() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = storage(&moto, "entries", "").await;
        for key in ["x", "x.bak", "x-1", "x+2", "x/inner", "y.bak", "z/", "w0"] {
            s3.inner.put(key, b"12345").await.unwrap();
        }
        assert_eq!(s3.entry_at("x").await.unwrap(), (Some(5), true));
        assert_eq!(s3.entry_at("y").await.unwrap(), (None, false));
        assert_eq!(s3.entry_at("z").await.unwrap(), (None, true));
        assert_eq!(s3.entry_at("w").await.unwrap(), (None, false));
        assert_eq!(s3.entry_at("x.bak").await.unwrap(), (Some(5), false));
        // STOR onto a directory's name is refused; onto a file beside a directory of the same name, allowed.
        assert_eq!(
            kind(s3.open_write("/z", WriteMode::Create).await),
            StorageErrorKind::IsADirectory
        );
        assert_eq!(write(&s3, "/x", WriteMode::Create, b"new").await, 3);
        // A directory removed by this instance is forgotten at once: uploads into it fail again.
        s3.mkdir("/d").await.unwrap();
        assert_eq!(write(&s3, "/d/f", WriteMode::Create, b"f").await, 1);
        s3.delete("/d/f").await.unwrap();
        s3.rmdir("/d").await.unwrap();
        assert_eq!(
            kind(s3.open_write("/d/g", WriteMode::Create).await),
            StorageErrorKind::NotFound
        );
    });
}
