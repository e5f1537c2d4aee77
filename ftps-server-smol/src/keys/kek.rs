//! The key-encryption key (KEK) and where it comes from: a file of 64 hex characters that only its owner may read
//! (generated on first start), or a command (a KMS hook) that prints one. Also the small crash-safe file writes
//! the keyring and the rotation share.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// A 256-bit key-encryption key. It wraps (encrypts) the per-user data keys and never touches file data.
///
/// `Debug` shows only its [fingerprint](Kek::fingerprint), so a KEK cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Kek([u8; 32]);

impl Kek {
    /// A KEK from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new random KEK from the system's secure random source.
    ///
    /// # Errors
    /// When the random source fails.
    pub fn generate() -> io::Result<Self> {
        random_bytes().map(Self)
    }

    /// Parses 64 hex characters, with surrounding whitespace (a trailing newline) allowed.
    ///
    /// # Errors
    /// `InvalidData` when the text is not exactly 64 hex characters; the message never repeats the text.
    pub fn from_hex(text: &str) -> io::Result<Self> {
        let text = text.trim();
        let mut bytes = [0u8; 32];
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "a KEK is 64 hex characters (32 bytes); got {} characters{}",
                text.len(),
                if text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ""
                } else {
                    " that are not all hex digits"
                }
            )));
        }
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| invalid("a KEK is 64 hex characters".into()))?;
        }
        Ok(Self(bytes))
    }

    /// The key as 64 lowercase hex characters (what a KEK file holds).
    pub(crate) fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 bytes of SHA-256 of the key: stored next to every wrapped data key, so that a data key wrapped
    /// under another KEK is reported as "wrong KEK" and not as a damaged file. It reveals nothing useful about
    /// the key (a 256-bit key cannot be searched for from 64 bits of its hash).
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 8] {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest.as_ref()[..8]);
        fingerprint
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(fingerprint {})", hex(&self.fingerprint()))
    }
}

/// Overwrites the key bytes when the value is dropped, as [`DataKey`](crate::storage::DataKey) does (best effort:
/// copies the compiler made of a moved value are not reached).
impl Drop for Kek {
    fn drop(&mut self) {
        crate::storage::encrypted::wipe(&mut self.0);
    }
}

/// Where a KEK comes from: the `kek_file` or `kek_command` of `[encryption]`, or the new KEK of a rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KekSource {
    /// A file of 64 hex characters, mode 0600 (no access for group or others).
    KekFile(PathBuf),
    /// A program and its arguments, run without a shell, that prints 64 hex characters on stdout.
    KekCommand(Vec<String>),
}

impl fmt::Display for KekSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KekFile(path) => write!(f, "kek_file {}", path.display()),
            Self::KekCommand(argv) => write!(f, "kek_command {argv:?}"),
        }
    }
}

impl KekSource {
    /// Reads the KEK: the file (which must exist), or the command's output within `timeout`.
    ///
    /// # Errors
    /// A missing, unsafe or malformed file; a command that fails, times out or prints something else.
    pub fn load(&self, timeout: Duration) -> io::Result<Kek> {
        match self {
            Self::KekFile(path) => read_kek_file(path),
            Self::KekCommand(argv) => run_kek_command(argv, timeout),
        }
    }

    /// The KEK in effect at start: like [`KekSource::load`], but a missing `kek_file` is generated first
    /// (32 random bytes, mode 0600, fsynced with its folder).
    ///
    /// # Errors
    /// As [`KekSource::load`], or when the file cannot be created.
    pub fn load_or_create(&self, timeout: Duration) -> io::Result<Kek> {
        if let Self::KekFile(path) = self {
            if !path.exists() {
                let kek = Kek::generate()?;
                if write_file(
                    path,
                    format!("{}\n", kek.to_hex()).as_bytes(),
                    Place::Exclusive,
                )? {
                    tracing::info!(file = %path.display(), fingerprint = %hex(&kek.fingerprint()),
                        "generated a new KEK: back it up with the state directory's keys folder");
                }
                // Another process may have won the race: the file on disk is the KEK either way.
            }
        }
        self.load(timeout)
    }
}

/// Reads a KEK file, refusing one that group or others may read or that is not exactly 64 hex characters.
fn read_kek_file(path: &Path) -> io::Result<Kek> {
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("kek_file {}: {e}", path.display()));
    let mut file = File::open(path).map_err(context)?;
    let metadata = file.metadata().map_err(context)?;
    if !metadata.is_file() {
        return Err(context(invalid("not a regular file".into())));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "kek_file {path} has mode {mode:04o}: group or others have access; run `chmod 600 {path}` \
                 (and consider whether the key leaked)",
                path = path.display()
            ),
        ));
    }
    let mut text = String::new();
    // A KEK file is 65 bytes; reading a little more is enough to tell a wrong file without reading a huge one.
    (&mut file)
        .take(256)
        .read_to_string(&mut text)
        .map_err(|_| context(invalid("not text (a KEK file is 64 hex characters)".into())))?;
    Kek::from_hex(&text).map_err(context)
}

/// Runs a KEK command (no shell), waiting at most `timeout` for it to exit, and parses its stdout.
fn run_kek_command(argv: &[String], timeout: Duration) -> io::Result<Kek> {
    let Some((program, args)) = argv.split_first() else {
        return Err(invalid("kek_command is empty".into()));
    };
    let context = |m: String| format!("kek_command {program}: {m}");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), context(format!("cannot start it: {e}"))))?;
    // Read both pipes off this thread (a chatty program must not block on a full pipe), bounded, and hand the
    // bytes over a channel: a grandchild that keeps a pipe open must not hang the start.
    let (stdout_tx, stdout_rx) = mpsc::channel();
    let (stderr_tx, stderr_rx) = mpsc::channel();
    for (pipe, tx) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            stdout_tx,
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            stderr_tx,
        ),
    ] {
        if let Some(pipe) = pipe {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.take(64 * 1024).read_to_end(&mut bytes);
                let _ = tx.send(bytes);
            });
        }
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                context(format!("no answer within {} s; killed", timeout.as_secs())),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let grace = Duration::from_secs(1);
    let stdout = stdout_rx.recv_timeout(grace).unwrap_or_default();
    let stderr = stderr_rx.recv_timeout(grace).unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        let tail: String = stderr.chars().take(500).collect();
        return Err(io::Error::other(context(format!(
            "{status}{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ))));
    }
    let text = std::str::from_utf8(&stdout).map_err(|_| {
        invalid(context(
            "stdout is not text (expected 64 hex characters)".into(),
        ))
    })?;
    Kek::from_hex(text).map_err(|e| invalid(context(format!("stdout: {e}"))))
}

/// How [`write_file`] treats an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Never replace: `Ok(false)` when the file exists (another writer won).
    Exclusive,
    /// Replace atomically.
    Replace,
}

/// Writes `bytes` to `path` with mode 0600 so that a reader sees the old file or the whole new one, never a part,
/// even after a crash: a temporary file in the same folder, fsynced, then hard-linked (exclusive: fails if the
/// name exists, so two writers cannot both win) or renamed (replace) into place, then the folder fsynced.
/// Returns whether this call's bytes are now at `path`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: Place) -> io::Result<bool> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let suffix: [u8; 8] = random_bytes()?;
    let temp = dir.join(format!(".{name}.{}.tmp", hex(&suffix)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        let placed = match mode {
            Place::Exclusive => match std::fs::hard_link(&temp, path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            },
            Place::Replace => {
                std::fs::rename(&temp, path)?;
                true
            }
        };
        if placed {
            sync_dir(dir)?;
        }
        Ok(placed)
    })();
    // After a link (or a failure) the temporary name still exists; after a rename this finds nothing.
    let _ = std::fs::remove_file(&temp);
    result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Makes a folder's entries (a new, renamed or removed name) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// 32 (or N) bytes from the system's secure random source.
pub(crate) fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| io::Error::other("the system random source failed"))?;
    Ok(bytes)
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_text() {
        let kek = Kek::generate().unwrap();
        assert_eq!(Kek::from_hex(&format!("{}\n", kek.to_hex())).unwrap(), kek);
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(66)] {
            assert!(Kek::from_hex(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{kek:?}").contains(&kek.to_hex()));
    }

    #[test]
    fn kek_file_is_generated_private_and_refused_when_readable_or_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let source = KekSource::KekFile(path.clone());
        let kek = source.load_or_create(Duration::from_secs(1)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(source.load_or_create(Duration::from_secs(1)).unwrap(), kek);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = source.load(Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0640"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        let err = source.load(Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("64 hex"), "{err}");
    }

    #[test]
    fn kek_command_output_exit_status_and_timeout() {
        let kek = Kek::generate().unwrap();
        let sh =
            |script: &str| KekSource::KekCommand(vec!["sh".into(), "-c".into(), script.into()]);
        let t = Duration::from_secs(5);
        assert_eq!(sh(&format!("echo {}", kek.to_hex())).load(t).unwrap(), kek);
        let err = sh("echo denied >&2; exit 3")
            .load(t)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exit status: 3") && err.contains("denied"),
            "{err}"
        );
        let err = sh("echo short").load(t).unwrap_err().to_string();
        assert!(err.contains("stdout") && err.contains("64 hex"), "{err}");
        let started = Instant::now();
        let err = sh("sleep 5").load(Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(3));
        let err = KekSource::KekCommand(vec!["/nonexistent/kms".into()])
            .load(t)
            .unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
    }

    #[test]
    fn exclusive_write_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(write_file(&path, b"one", Place::Exclusive).unwrap());
        assert!(!write_file(&path, b"two", Place::Exclusive).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert!(write_file(&path, b"three", Place::Replace).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
