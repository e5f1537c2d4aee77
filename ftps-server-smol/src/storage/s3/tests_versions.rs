//! The time views of [`S3Storage`] from bucket versioning, against moto (skipped when moto is not installed).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ftps_testkit::Moto;
use futures_lite::future::block_on;
use futures_lite::AsyncReadExt;

use super::tests::{kind, names, storage, write};
use super::*;
use crate::storage::{version_name, TimeViews};

async fn read_at(s: &S3Storage, path: &str, at: SystemTime, offset: u64) -> Vec<u8> {
    let mut handle = s.open_read_at(path, at, offset).await.unwrap();
    let mut data = Vec::new();
    handle.reader.read_to_end(&mut data).await.unwrap();
    data
}

async fn read_version(s: &dyn Storage, path: &str, id: u64) -> Vec<u8> {
    let mut handle = s.open_version(path, id, 0).await.unwrap();
    let mut data = Vec::new();
    handle.reader.read_to_end(&mut data).await.unwrap();
    data
}

async fn versioned(moto: &Moto, bucket: &str) -> S3Storage {
    let s3 = storage(moto, bucket, "ftp").await;
    s3.enable_versioning().await.unwrap();
    s3.check_versioning().await.unwrap();
    s3
}

/// Sleeps past the next whole second: moto dates versions to the second, so each step gets its own date.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn versioning_must_be_enabled() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = storage(&moto, "plain", "").await;
        let e = s3.check_versioning().await.unwrap_err();
        assert!(e.to_string().contains("put-bucket-versioning"), "{e}");
        s3.enable_versioning().await.unwrap();
        s3.check_versioning().await.unwrap();
    });
}

#[test]
fn history_at_each_instant_and_by_version() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = versioned(&moto, "hist").await;
        let before = SystemTime::now() - Duration::from_secs(30);
        s3.mkdir("/d").await.unwrap();
        write(&s3, "/d/f", WriteMode::Create, b"one").await;
        write(&s3, "/d/g", WriteMode::Create, b"gee").await;
        s3.mkdir("/d/sub").await.unwrap();
        write(&s3, "/d/sub/x", WriteMode::Create, b"x").await;
        let t1 = SystemTime::now();
        next_second();
        write(&s3, "/d/f", WriteMode::Create, b"two!").await;
        let t2 = SystemTime::now();
        next_second();
        s3.delete("/d/f").await.unwrap();
        s3.delete("/d/sub/x").await.unwrap();
        s3.rmdir("/d/sub").await.unwrap();
        let t3 = SystemTime::now();
        next_second();
        write(&s3, "/d/f", WriteMode::Create, b"three").await;
        let t4 = SystemTime::now();

        // Before anything: nothing, but the root.
        assert!(s3.list_at("/", before).await.unwrap().is_empty());
        assert_eq!(
            kind(s3.metadata_at("/d", before).await),
            StorageErrorKind::NotFound
        );
        assert_eq!(
            kind(s3.list_at("/d", before).await),
            StorageErrorKind::NotFound
        );

        let expect = [
            (t1, Some(&b"one"[..]), true),
            (t2, Some(&b"two!"[..]), true),
            (t3, None, false),
            (t4, Some(&b"three"[..]), false),
        ];
        for (at, content, sub) in expect {
            let mut want = vec![("g".to_owned(), FileKind::File)];
            if content.is_some() {
                want.push(("f".to_owned(), FileKind::File));
            }
            if sub {
                want.push(("sub".to_owned(), FileKind::Directory));
            }
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(names(&s3.list_at("/d", at).await.unwrap()), want);
            assert_eq!(
                names(&s3.list_at("/", at).await.unwrap()),
                [("d".to_owned(), FileKind::Directory)]
            );
            match content {
                Some(bytes) => {
                    assert_eq!(read_at(&s3, "/d/f", at, 0).await, bytes);
                    assert_eq!(read_at(&s3, "/d/f", at, 1).await, &bytes[1..]);
                    let meta = s3.metadata_at("/d/f", at).await.unwrap();
                    assert_eq!((meta.kind, meta.size), (FileKind::File, bytes.len() as u64));
                    assert!(meta.modified.unwrap() <= at);
                }
                None => {
                    assert_eq!(
                        kind(s3.open_read_at("/d/f", at, 0).await),
                        StorageErrorKind::NotFound
                    );
                    assert_eq!(
                        kind(s3.metadata_at("/d/f", at).await),
                        StorageErrorKind::NotFound
                    );
                }
            }
            assert_eq!(
                s3.metadata_at("/d/sub", at).await.map(|m| m.kind).ok(),
                sub.then_some(FileKind::Directory)
            );
            assert_eq!(
                kind(s3.list_at("/d/g", at).await),
                StorageErrorKind::NotADirectory
            );
            assert_eq!(
                kind(s3.open_read_at("/d", at, 0).await),
                StorageErrorKind::IsADirectory
            );
        }

        // Every version, oldest first, the current one last with id 0.
        let versions = s3.versions("/d/f").await.unwrap();
        let sizes: Vec<_> = versions.iter().map(|v| v.size).collect();
        assert_eq!(sizes, [3, 4, 5]);
        assert!(versions[0].since <= t1 && versions[1].since <= t2 && versions[2].since <= t4);
        assert_eq!(versions[0].until, Some(versions[1].since));
        assert!(versions[1].until.unwrap() <= t3);
        assert_eq!((versions[2].id, versions[2].until), (0, None));
        assert!(versions[0].id != 0 && versions[1].id != 0 && versions[0].id != versions[1].id);
        for (v, bytes) in versions.iter().zip([&b"one"[..], b"two!", b"three"]) {
            assert_eq!(read_version(&s3, "/d/f", v.id).await, bytes);
        }
        assert_eq!(
            kind(s3.open_version("/d/f", 12345, 0).await),
            StorageErrorKind::NotFound
        );
        assert!(s3.versions("/d").await.unwrap().is_empty());

        // Through the views the server serves.
        let views: Arc<dyn Storage> = Arc::new(TimeViews(Arc::new(s3.clone())));
        let listed = views.list("/@versions/d/f").await.unwrap();
        assert_eq!(listed.len(), 3);
        let old = format!("/@versions/d/f/{}", version_name(&versions[0]));
        let mut handle = views.open_read(&old, 0).await.unwrap();
        let mut data = Vec::new();
        handle.reader.read_to_end(&mut data).await.unwrap();
        assert_eq!(data, b"one");
        let at = jiff::Timestamp::try_from(t2).unwrap();
        let mut handle = views.open_read(&format!("/@at/{at}/d/f"), 0).await.unwrap();
        let mut data = Vec::new();
        handle.reader.read_to_end(&mut data).await.unwrap();
        assert_eq!(data, b"two!");
    });
}

#[test]
fn version_listings_paginate() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = versioned(&moto, "pages").await;
        s3.mkdir("/p").await.unwrap();
        // 1,050 versions of one key: its history spans two pages, and so does the folder's listing.
        for i in 0..1050 {
            s3.inner
                .put("ftp/p/a", format!("a{i}").as_bytes())
                .await
                .unwrap();
        }
        s3.inner.put("ftp/p/b", b"b").await.unwrap();
        s3.inner.put("ftp/p/c/inner", b"c").await.unwrap();
        // Ten more folders (two batches of checks) and one whose only file is deleted: not there now.
        for i in 0..10 {
            s3.inner.put(&format!("ftp/p/s{i}/x"), b"s").await.unwrap();
        }
        s3.inner.put("ftp/p/gone/x", b"g").await.unwrap();
        s3.inner.delete("ftp/p/gone/x").await.unwrap();
        let versions = s3.versions("/p/a").await.unwrap();
        assert_eq!(versions.len(), 1050);
        assert_eq!(versions.last().map(|v| v.id), Some(0));
        assert_eq!(read_version(&s3, "/p/a", versions[7].id).await, b"a7");
        assert_eq!(read_version(&s3, "/p/a", versions[1020].id).await, b"a1020");
        assert_eq!(read_version(&s3, "/p/a", 0).await, b"a1049");
        let now = SystemTime::now() + Duration::from_secs(1);
        let mut want = vec![
            ("a".to_owned(), FileKind::File),
            ("b".to_owned(), FileKind::File),
            ("c".to_owned(), FileKind::Directory),
        ];
        want.extend((0..10).map(|i| (format!("s{i}"), FileKind::Directory)));
        assert_eq!(names(&s3.list_at("/p", now).await.unwrap()), want);
        assert_eq!(read_at(&s3, "/p/b", now, 0).await, b"b");
        assert_eq!(s3.versions("/p/b").await.unwrap().len(), 1);
    });
}

/// Names with characters URL encoding changes (space, plus, percent, ampersand, non-ASCII) list and open as
/// themselves, now and at a past instant: both listings ask for URL-encoded keys.
#[test]
fn names_that_url_encoding_changes_round_trip() {
    let Some(moto) = Moto::start() else { return };
    block_on(async {
        let s3 = versioned(&moto, "odd-names").await;
        let names_in = ["a b.txt", "1+1=2", "100% & more", "été", "x+%20y"];
        s3.mkdir("/my dir+").await.unwrap();
        for name in names_in {
            write(
                &s3,
                &format!("/my dir+/{name}"),
                WriteMode::Create,
                name.as_bytes(),
            )
            .await;
        }
        next_second();
        let now = SystemTime::now();
        let mut expected: Vec<_> = names_in
            .iter()
            .map(|n| (n.to_string(), FileKind::File))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(names(&s3.list("/my dir+").await.unwrap()), expected);
        assert_eq!(
            names(&s3.list("/").await.unwrap()),
            [("my dir+".to_owned(), FileKind::Directory)]
        );
        assert_eq!(names(&s3.list_at("/my dir+", now).await.unwrap()), expected);
        for name in names_in {
            let path = format!("/my dir+/{name}");
            assert_eq!(read_at(&s3, &path, now, 0).await, name.as_bytes(), "{path}");
            assert_eq!(s3.metadata(&path).await.unwrap().size, name.len() as u64);
        }
    });
}
