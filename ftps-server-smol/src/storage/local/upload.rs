//! Writing files: how each [`WriteMode`] opens its file, and [`LocalUpload`], the temporary file (or the file
//! appended to) that `commit` makes final with a rename and the fsyncs that make it durable.

use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use blocking::{unblock, Unblock};
use cap_std::fs::{Dir, OpenOptions, PermissionsExt};
use futures_lite::{AsyncWrite, AsyncWriteExt};

use super::*;

/// Makes a rename into `target`'s directory durable: fsync of that directory (the file itself was
/// synced before the rename).
pub(super) fn sync_parent(root: &Dir, target: &Path) -> io::Result<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // `open_dir` gives an `O_PATH` descriptor, which fsync(2) refuses (EBADF): open it for reading.
    root.open(parent)?.into_std().sync_all()
}

pub(super) fn is_a_directory() -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, "is a directory")
}

/// How a [`LocalUpload`] ends.
#[derive(Debug)]
pub(super) enum Finish {
    /// Atomic create: rename `temp` (a name in the reserved folder) over `target` on commit, remove
    /// `temp` otherwise; for [`WriteMode::CreateNew`], `holder` is the inode of the empty file that holds
    /// the name, removed on abort if it is still that file.
    Rename {
        temp: PathBuf,
        target: PathBuf,
        holder: Option<u64>,
    },
    /// Append / resume: the data is already in place.
    InPlace,
}

pub(super) fn open_for_write(
    inner: &Inner,
    target: PathBuf,
    mode: WriteMode,
) -> io::Result<(std::fs::File, Finish)> {
    let existing = match inner.root.metadata(&target) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(is_a_directory());
    }
    match mode {
        WriteMode::Create | WriteMode::CreateNew => {
            let temp_dir = inner.temp_dir()?;
            let holder = if mode == WriteMode::CreateNew {
                let file = inner
                    .root
                    .open_with(&target, OpenOptions::new().write(true).create_new(true))?;
                Some(std::os::unix::fs::MetadataExt::ino(
                    &file.into_std().metadata()?,
                ))
            } else {
                None
            };
            let temp = PathBuf::from(temp_file_name());
            let file = temp_dir
                .open_with(&temp, OpenOptions::new().write(true).create_new(true))?
                .into_std();
            // A new version keeps the permissions of the file it replaces.
            if let Some(meta) = existing {
                let mode = meta.permissions().mode() & 0o7777;
                let std_perms = std::os::unix::fs::PermissionsExt::from_mode(mode);
                if let Err(e) = file.set_permissions(std_perms) {
                    drop(file);
                    let _ = temp_dir.remove_file(&temp);
                    return Err(e);
                }
            }
            Ok((
                file,
                Finish::Rename {
                    temp,
                    target,
                    holder,
                },
            ))
        }
        WriteMode::Append => {
            let file = inner
                .root
                .open_with(&target, OpenOptions::new().append(true).create(true))?
                .into_std();
            Ok((file, Finish::InPlace))
        }
        WriteMode::Resume(offset) => {
            let mut file = inner
                .root
                .open_with(&target, OpenOptions::new().write(true))?
                .into_std();
            file.set_len(offset)?;
            file.seek(SeekFrom::Start(offset))?;
            Ok((file, Finish::InPlace))
        }
    }
}

/// An upload to a [`LocalStorage`].
///
/// The first [`FILE_BUFFER_SIZE`] bytes are kept in memory. A body that fits (most files of a many-small-files
/// workload) is then written, closed and renamed by one blocking-pool job at commit: each job is a round trip
/// to another thread, and with a background writer a 4 KiB upload took four (open, write, drain, rename)
/// instead of two. A longer body hands the file and the buffered head to a background writer and streams.
pub(super) struct LocalUpload {
    /// Bytes not yet given to the file: everything so far while buffering; the part of the head the
    /// background writer has not taken yet while streaming.
    head: Vec<u8>,
    /// How much of `head` the background writer already took.
    head_sent: usize,
    /// The file while buffering; `None` once streaming, committed or aborted.
    file: Option<std::fs::File>,
    /// The background writer once streaming; `None` before, and once commit or abort took it.
    writer: Option<Unblock<std::fs::File>>,
    written: u64,
    /// `None` once the upload was committed or cleaned up.
    finish: Option<Finish>,
    inner: Arc<Inner>,
}

pub(super) fn finished() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "upload already finished")
}

impl LocalUpload {
    pub(super) fn new(file: std::fs::File, finish: Finish, inner: Arc<Inner>) -> Self {
        Self {
            head: Vec::new(),
            head_sent: 0,
            file: Some(file),
            writer: None,
            written: 0,
            finish: Some(finish),
            inner,
        }
    }

    /// Hands what is left of the head to the background writer.
    fn poll_send_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Ready(Err(finished()));
        };
        while self.head_sent < self.head.len() {
            let rest = self.head.get(self.head_sent..).unwrap_or_default();
            match Pin::new(&mut *writer).poll_write(cx, rest) {
                // A failed background write (see `poll_write`): flushing returns its own error.
                Poll::Ready(Ok(0)) => {
                    return match Pin::new(writer).poll_flush(cx) {
                        Poll::Ready(Ok(())) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        other => other,
                    }
                }
                Poll::Ready(Ok(n)) => self.head_sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.head = Vec::new();
        self.head_sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LocalUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.writer.is_none() {
            if this.file.is_none() {
                return Poll::Ready(Err(finished()));
            }
            if this.head.len() + buf.len() <= FILE_BUFFER_SIZE {
                this.head.extend_from_slice(buf);
                this.written += buf.len() as u64;
                return Poll::Ready(Ok(buf.len()));
            }
            // Too long to buffer: stream from here on.
            this.writer = this
                .file
                .take()
                .map(|file| Unblock::with_capacity(FILE_BUFFER_SIZE, file));
        }
        match this.poll_send_head(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let Some(writer) = this.writer.as_mut() else {
            return Poll::Ready(Err(finished()));
        };
        let result = Pin::new(&mut *writer).poll_write(cx, buf);
        match result {
            // `Unblock` reports a failed background write as a closed pipe: `Ok(0)`, which `write_all` turns
            // into `WriteZero` (answered 451). Flushing returns the write's own error, so a full disk is ENOSPC
            // and answered 452 (RFC 959 "insufficient storage space").
            Poll::Ready(Ok(0)) if !buf.is_empty() => match Pin::new(writer).poll_flush(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => Poll::Ready(Ok(0)),
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.writer.is_none() {
            // Buffering: the head goes to the file at commit.
            return Poll::Ready(if this.file.is_some() {
                Ok(())
            } else {
                Err(finished())
            });
        }
        match this.poll_send_head(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match this.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_flush(cx),
            None => Poll::Ready(Err(finished())),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.writer.is_none() {
            return Poll::Ready(Ok(()));
        }
        match this.poll_send_head(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match this.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_close(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl LocalUpload {
    async fn finish_commit(&mut self) -> io::Result<u64> {
        let (file, head) = if self.writer.is_some() {
            // `Unblock::into_inner` swallows write errors: flush first (the head too) so ENOSPC surfaces here.
            self.flush().await?;
            let writer = self.writer.take().ok_or_else(finished)?;
            (writer.into_inner().await, Vec::new())
        } else {
            let file = self.file.take().ok_or_else(finished)?;
            (file, std::mem::take(&mut self.head))
        };
        let sync = self.inner.sync_on_commit;
        let finish = self.finish.take();
        let inner = Arc::clone(&self.inner);
        // One job: the buffered head (a whole small file), the optional fsync, and the rename.
        unblock(move || {
            let mut file = file;
            let written = io::Write::write_all(&mut file, &head);
            let synced = written.and_then(|()| if sync { file.sync_all() } else { Ok(()) });
            drop(file);
            match finish {
                Some(Finish::Rename { temp, target, .. }) => {
                    let temp_dir = inner.temp_dir()?;
                    let renamed = synced
                        .and_then(|()| temp_dir.rename(&temp, &inner.root, &target))
                        .and_then(|()| {
                            if sync {
                                sync_parent(&inner.root, &target)
                            } else {
                                Ok(())
                            }
                        });
                    if renamed.is_err() {
                        let _ = temp_dir.remove_file(&temp);
                    }
                    renamed
                }
                Some(Finish::InPlace) | None => synced,
            }
        })
        .await?;
        Ok(self.written)
    }

    async fn finish_abort(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Let in-flight writes land (append/resume keep them), ignoring errors.
            let file = writer.into_inner().await;
            drop(file);
        }
        if let Some(job) = self.discard_job() {
            let _ = unblock(job).await;
        }
    }

    /// The blocking-pool work that ends an upload without a commit (`None` when there is none): a new file's
    /// temp file is removed; an append or resume keeps what arrived, so a buffered head is written.
    fn discard_job(&mut self) -> Option<impl FnOnce() -> io::Result<()> + Send + 'static> {
        let finish = self.finish.take()?;
        let file = self.file.take();
        let head = std::mem::take(&mut self.head);
        if matches!(finish, Finish::InPlace) && (file.is_none() || head.is_empty()) {
            return None;
        }
        let inner = Arc::clone(&self.inner);
        Some(move || match (finish, file) {
            (
                Finish::Rename {
                    temp,
                    target,
                    holder,
                },
                file,
            ) => {
                drop(file);
                if let Some(ino) = holder {
                    // Only the empty file this upload created: never what someone put there since.
                    let ours = inner.root.symlink_metadata(&target).is_ok_and(|m| {
                        m.is_file() && m.len() == 0 && cap_std::fs::MetadataExt::ino(&m) == ino
                    });
                    if ours {
                        let _ = inner.root.remove_file(&target);
                    }
                }
                inner.temp_dir()?.remove_file(temp)
            }
            (Finish::InPlace, Some(mut file)) => io::Write::write_all(&mut file, &head),
            (Finish::InPlace, None) => Ok(()),
        })
    }
}

impl Upload for LocalUpload {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        Box::pin(async move {
            match self.finish_commit().await {
                Ok(written) => Ok(written),
                Err(e) => {
                    self.finish_abort().await;
                    Err(StorageError::from(e))
                }
            }
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.finish_abort().await })
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Dropped mid-transfer (task cancelled): the same end as `abort`, off the executor and not awaited.
        if let Some(job) = self.discard_job() {
            unblock(job).detach();
        }
    }
}
