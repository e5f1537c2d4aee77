//! Embedding `ftps-server` as a library, with a storage backend of your own.
//!
//! The server crate and its engine do all of FTP and TLS; an embedding program supplies three things:
//!
//! - a [`Storage`]: what the files are (here, an in-memory "drop box");
//! - an [`Authenticator`]: who may log in (here, one fixed user);
//! - a `rustls::ServerConfig` (here, a self-signed certificate made at start-up with rcgen).
//!
//! The drop box shows a read-only `/README.txt` and a write-only `/inbox` directory: clients may list
//! both, download the README and upload new files into `/inbox`, and nothing else. The backend only
//! answers "yes, here it is" or "no, and this is the kind of no" ([`StorageErrorKind`]); turning that
//! into replies for the client is the engine's job.
//!
//! ```text
//! cargo run -p ftps-server-smol --example custom_storage -- 2121
//! ```
//!
//! The first line on stdout is `listening on ADDR`; the server's log goes to stderr.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use ftps_proto::server::SessionConfig;
use ftps_server_smol::auth::{
    AuthOutcome, AuthenticatedUser, Authenticator, LoginAttempt, Permission, UserHome,
};
use ftps_server_smol::server::{ListenerOptions, Server, PRELIMINARY_REPLY_WAIT};
use ftps_server_smol::storage::{
    BoxFuture, DirEntry, FileKind, Metadata, ReadHandle, Storage, StorageError, StorageErrorKind,
    Upload, WriteMode,
};
use futures_lite::io::Cursor;
use futures_lite::AsyncWrite;

/// The one read-only file.
const README: &[u8] =
    b"Welcome to the drop box.\nUpload your files into /inbox; they cannot be read back.\n";

/// The largest file the inbox accepts: a memory backend must bound what a client can make it hold.
const MAX_UPLOAD: usize = 16 * 1024 * 1024;

/// The one user (a real program would check hashed passwords, see `auth::UsersFile`).
const USER: &str = "demo";
const PASSWORD: &str = "demo";

/// An uploaded file. Only its size and arrival time are ever shown: the inbox is write-only.
struct Received {
    data: Vec<u8>,
    arrived: SystemTime,
}

/// Uploaded files by name, shared by the storage and its uploads in progress.
type Inbox = Arc<Mutex<BTreeMap<String, Received>>>;

/// The custom backend. Cheap to share: the server holds it as `Arc<dyn Storage>`.
#[derive(Default)]
struct DropBox {
    inbox: Inbox,
}

/// What a virtual path names in the drop box.
enum Place<'a> {
    Root,
    Readme,
    Inbox,
    InboxFile(&'a str),
}

/// Maps a virtual path onto the drop box. The engine normalises paths already, but a backend must
/// never trust that: anything unexpected is refused or simply does not exist.
fn locate(path: &str) -> Result<Place<'_>, StorageError> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.iter().any(|p| *p == ".." || p.contains(['\0', '\\'])) {
        return Err(StorageError::new(StorageErrorKind::InvalidName, path));
    }
    match parts.as_slice() {
        [] => Ok(Place::Root),
        ["README.txt"] => Ok(Place::Readme),
        ["inbox"] => Ok(Place::Inbox),
        ["inbox", name] => Ok(Place::InboxFile(name)),
        _ => Err(not_found()),
    }
}

fn not_found() -> StorageError {
    StorageError::new(StorageErrorKind::NotFound, "no such file or directory")
}

fn denied(why: &str) -> StorageError {
    StorageError::new(StorageErrorKind::PermissionDenied, why)
}

fn directory() -> Metadata {
    Metadata {
        kind: FileKind::Directory,
        size: 0,
        modified: None,
        mode: Some(0o755),
    }
}

fn file(size: usize, modified: Option<SystemTime>, mode: u32) -> Metadata {
    Metadata {
        kind: FileKind::File,
        size: size as u64,
        modified,
        mode: Some(mode),
    }
}

impl Received {
    /// Write-only for everyone (`--w-------`), as a hint in listings.
    fn metadata(&self) -> Metadata {
        file(self.data.len(), Some(self.arrived), 0o200)
    }
}

impl DropBox {
    fn inbox(&self) -> MutexGuard<'_, BTreeMap<String, Received>> {
        // Nothing here can be left half-updated by a panic: keep serving.
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn metadata_now(&self, path: &str) -> Result<Metadata, StorageError> {
        match locate(path)? {
            Place::Root | Place::Inbox => Ok(directory()),
            Place::Readme => Ok(file(README.len(), None, 0o444)),
            Place::InboxFile(name) => {
                let inbox = self.inbox();
                inbox
                    .get(name)
                    .map(Received::metadata)
                    .ok_or_else(not_found)
            }
        }
    }

    fn list_now(&self, path: &str) -> Result<Vec<DirEntry>, StorageError> {
        match locate(path)? {
            Place::Root => Ok(vec![
                DirEntry {
                    name: "README.txt".into(),
                    metadata: file(README.len(), None, 0o444),
                },
                DirEntry {
                    name: "inbox".into(),
                    metadata: directory(),
                },
            ]),
            Place::Inbox => Ok(self
                .inbox()
                .iter()
                .map(|(name, received)| DirEntry {
                    name: name.clone(),
                    metadata: received.metadata(),
                })
                .collect()),
            Place::Readme | Place::InboxFile(_) => Err(StorageError::new(
                StorageErrorKind::NotADirectory,
                "not a directory",
            )),
        }
    }
}

/// Every method returns a boxed future so the trait stays object-safe; this backend never waits, so
/// each answer is computed at once and wrapped in a ready future.
impl Storage for DropBox {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(std::future::ready(self.metadata_now(path)))
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(std::future::ready(self.list_now(path)))
    }

    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let result = match locate(path) {
            Ok(Place::Readme) => {
                // Resumed downloads start at `offset`; past the end there is simply nothing left.
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(README.len());
                Ok(ReadHandle {
                    reader: Box::new(Cursor::new(README.get(start..).unwrap_or_default())),
                    size: README.len() as u64,
                })
            }
            Ok(Place::Root | Place::Inbox) => Err(StorageError::new(
                StorageErrorKind::IsADirectory,
                "is a directory",
            )),
            Ok(Place::InboxFile(_)) => Err(denied("the inbox is write-only")),
            Err(e) => Err(e),
        };
        Box::pin(std::future::ready(result))
    }

    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        let result: Result<Box<dyn Upload>, StorageError> = match (locate(path), mode) {
            // Whole new files only: appending to or resuming someone else's upload is not allowed.
            (Ok(Place::InboxFile(name)), WriteMode::Create) => Ok(Box::new(DropUpload {
                inbox: Arc::clone(&self.inbox),
                name: name.to_owned(),
                data: Vec::new(),
            })),
            (Ok(Place::InboxFile(_)), _) => Err(denied("the inbox takes whole files only")),
            (Ok(_), _) => Err(denied("uploads go into /inbox")),
            (Err(e), _) => Err(e),
        };
        Box::pin(std::future::ready(result))
    }

    // The layout is fixed: no directories come or go, nothing is deleted, renamed or touched.
    fn mkdir<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Err(denied("fixed layout"))))
    }

    fn rmdir<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Err(denied("fixed layout"))))
    }

    fn delete<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Err(denied("nothing can be deleted"))))
    }

    fn rename<'a>(
        &'a self,
        _from: &'a str,
        _to: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Err(denied("nothing can be renamed"))))
    }

    fn set_modified<'a>(
        &'a self,
        _path: &'a str,
        _modified: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Err(denied("read-only metadata"))))
    }

    fn set_mode<'a>(
        &'a self,
        _path: &'a str,
        _mode: u32,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Err(denied("read-only metadata"))))
    }
}

/// One upload in progress: bytes collect here and appear in the inbox only on `commit`, so an
/// interrupted transfer leaves no half file behind (what [`WriteMode::Create`] promises).
struct DropUpload {
    inbox: Inbox,
    name: String,
    data: Vec<u8>,
}

impl AsyncWrite for DropUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.data.len().saturating_add(buf.len()) > MAX_UPLOAD {
            // Reported to the client as "out of space"; the upload is then aborted.
            return Poll::Ready(Err(io::ErrorKind::StorageFull.into()));
        }
        self.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Upload for DropUpload {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        let len = self.data.len() as u64;
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        let arrived = SystemTime::now();
        inbox.insert(
            self.name,
            Received {
                data: self.data,
                arrived,
            },
        );
        Box::pin(std::future::ready(Ok(len)))
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Nothing was published: dropping the buffer is all there is to do.
        Box::pin(std::future::ready(()))
    }
}

/// One fixed user whose `/` is the whole drop box. `ReadWrite` lets the engine ask for uploads at
/// all; the backend above decides where they may go.
struct OneUser;

impl Authenticator for OneUser {
    fn authenticate(&self, attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome> {
        let ok = attempt.user == USER && attempt.password == PASSWORD;
        Box::pin(std::future::ready(if ok {
            AuthOutcome::Accepted(AuthenticatedUser {
                name: USER.into(),
                home: UserHome::Virtual("/".into()),
                permission: Permission::ReadWrite,
                require_tls: None,
                site_to_site: None,
            })
        } else {
            AuthOutcome::Denied
        }))
    }
}

/// A TLS 1.2 + 1.3 configuration with a fresh self-signed certificate (clients use `-k`).
fn self_signed_tls() -> io::Result<Arc<rustls::ServerConfig>> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
    let provider = Arc::new(ftps_proto::tls_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

fn main() -> io::Result<()> {
    tracing_subscriber::fmt().with_writer(io::stderr).init();
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "usage: custom_storage [PORT]")
        })?,
        None => 2121,
    };

    let server = Server::builder()
        .storage(Arc::new(DropBox::default()))
        .authenticator(Arc::new(OneUser))
        .tls(self_signed_tls()?)
        // The defaults require TLS on control and data connections, and data connections that resume
        // the control connection's TLS session. Holding the transfer's first reply until the data
        // handshake is done lets clients such as curl resume over TLS 1.3 too.
        .session_config(SessionConfig {
            preliminary_reply_wait: PRELIMINARY_REPLY_WAIT,
            ..SessionConfig::default()
        })
        .build();

    smol::block_on(async {
        let listener = smol::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        // First line on stdout, for scripts and tests; stdout is line-buffered.
        println!("listening on {addr}");
        println!("try:");
        println!("  curl --ssl-reqd -k -u {USER}:{PASSWORD} ftp://{addr}/");
        println!("  curl --ssl-reqd -k -u {USER}:{PASSWORD} ftp://{addr}/README.txt");
        println!("  curl --ssl-reqd -k -u {USER}:{PASSWORD} -T some-file ftp://{addr}/inbox/");
        // Explicit FTPS: clients connect in clear text and upgrade (`ListenerOptions { implicit: true, .. }`
        // would start TLS at once instead).
        server.serve(listener, ListenerOptions::default()).await
    })
}
