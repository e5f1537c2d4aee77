//! The upload check (`[hooks] upload_check`): every upload is held in a spool file until a command (a malware
//! scanner, a format validator) accepts it; only then do its bytes reach the storage and the file appear under
//! its name. A rejected upload is answered with 550, never appears, and may be kept in a quarantine folder.
//!
//! The spool lives in `<state_dir>/spool`, outside every user's tree, so nobody can read a file that has not
//! passed. The command sees the plaintext bytes whatever the backend (an encrypting or remote storage included).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use blocking::Unblock;
use futures_lite::{AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use crate::storage::{BoxFuture, StorageError, StorageErrorKind, Upload};

/// How an upload check is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadCheck {
    /// Program and arguments; `{path}` in an argument is replaced by the spool file's path.
    pub argv: Vec<String>,
    /// Longest run; past it the upload is rejected.
    pub timeout: Duration,
    /// Where rejected uploads are moved (else deleted).
    pub quarantine: Option<PathBuf>,
    /// Where uploads wait for the verdict.
    pub spool: PathBuf,
}

/// `[hooks]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// The command that must accept each upload (exit status 0) before it is kept, e.g.
    /// `["clamdscan", "--no-summary", "{path}"]`; run without a shell. Unset: no check.
    pub upload_check: Vec<String>,
    /// Seconds the check may take; an upload whose check runs longer is rejected.
    pub upload_check_timeout: u64,
    /// Folder for rejected uploads (unset: they are deleted).
    pub quarantine: Option<PathBuf>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            upload_check: Vec::new(),
            upload_check_timeout: 60,
            quarantine: None,
        }
    }
}

impl HooksConfig {
    /// The check to run, if one is configured; the spool goes under `state_dir`.
    pub fn upload_check(&self, state_dir: &Path) -> Option<UploadCheck> {
        (!self.upload_check.is_empty()).then(|| UploadCheck {
            argv: self.upload_check.clone(),
            timeout: Duration::from_secs(self.upload_check_timeout),
            quarantine: self.quarantine.clone(),
            spool: state_dir.join("spool"),
        })
    }
}

/// An [`Upload`] whose bytes go to a spool file; `commit` runs the check and, when it passes, copies them into
/// the real upload and commits that.
pub(crate) struct CheckedUpload {
    inner: Box<dyn Upload>,
    spool: Unblock<std::fs::File>,
    spool_path: PathBuf,
    check: Arc<UploadCheck>,
    /// The file's path as the client named it, for the command's environment and the logs.
    virtual_path: String,
    user: Option<String>,
}

impl CheckedUpload {
    /// Holds `inner` back behind a new spool file.
    pub(crate) fn new(
        inner: Box<dyn Upload>,
        check: Arc<UploadCheck>,
        virtual_path: String,
        user: Option<String>,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(&check.spool)?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let spool_path = check.spool.join(format!("upload.{name}"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&spool_path)?;
        Ok(Self {
            inner,
            spool: Unblock::new(file),
            spool_path,
            check,
            virtual_path,
            user,
        })
    }
}

impl AsyncWrite for CheckedUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.spool).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.spool).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.spool).poll_close(cx)
    }
}

fn other(e: impl std::fmt::Display) -> StorageError {
    StorageError::new(StorageErrorKind::Other, e.to_string())
}

impl Upload for CheckedUpload {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        let Self {
            mut inner,
            mut spool,
            spool_path,
            check,
            virtual_path,
            user,
        } = *self;
        Box::pin(async move {
            if let Err(e) = spool.flush().await {
                inner.abort().await;
                let _ = std::fs::remove_file(&spool_path);
                return Err(other(e));
            }
            drop(spool);
            let verdict = {
                let (check, path) = (Arc::clone(&check), spool_path.clone());
                let (virtual_path, user) = (virtual_path.clone(), user.clone());
                blocking::unblock(move || run_check(&check, &path, &virtual_path, user.as_deref()))
                    .await
            };
            if let Err(why) = verdict {
                tracing::warn!(path = %virtual_path, user = user.as_deref().unwrap_or("-"), %why, "upload rejected by the upload check");
                inner.abort().await;
                quarantine(&check, &spool_path, &virtual_path);
                return Err(StorageError::new(StorageErrorKind::Rejected, why));
            }
            let copied = async {
                let file = std::fs::File::open(&spool_path)?;
                futures_lite::io::copy(Unblock::new(file), &mut inner).await
            }
            .await;
            let _ = std::fs::remove_file(&spool_path);
            match copied {
                Ok(_) => inner.commit().await,
                Err(e) => {
                    inner.abort().await;
                    Err(other(e))
                }
            }
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        let _ = std::fs::remove_file(&self.spool_path);
        self.inner.abort()
    }
}

/// Runs the check on `path`; `Err` says why the upload is rejected.
fn run_check(
    check: &UploadCheck,
    path: &Path,
    virtual_path: &str,
    user: Option<&str>,
) -> Result<(), String> {
    let shown = path.to_string_lossy();
    let argv: Vec<String> = check
        .argv
        .iter()
        .map(|a| a.replace("{path}", &shown))
        .collect();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("FTPS_PATH", virtual_path)
        .env("FTPS_USER", user.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("upload check {}: {e}", argv[0]))?;
    let deadline = Instant::now() + check.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("upload check said no ({status})")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("upload check timed out".to_owned());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Moves a rejected upload to the quarantine folder, or deletes it.
fn quarantine(check: &UploadCheck, spool_path: &Path, virtual_path: &str) {
    if let Some(dir) = &check.quarantine {
        let name = virtual_path.trim_start_matches('/').replace('/', "_");
        let stamp = spool_path
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = dir.join(format!("{name}.{stamp}"));
        let moved =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::rename(spool_path, &target));
        match moved {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "rejected upload not quarantined; deleting it")
            }
        }
    }
    let _ = std::fs::remove_file(spool_path);
}
