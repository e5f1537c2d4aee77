//! Keys for encryption at rest (issue 17): one random data key per user, wrapped by a key-encryption key.
//!
//! The hierarchy, top down:
//! - **KEK** (key-encryption key, 32 bytes): from `kek_file` (default `<state_dir>/kek`, generated on first
//!   start, mode 0600) or from `kek_command`, a KMS hook. It only wraps data keys.
//! - **Data key** of each user (32 random bytes, made on the user's first use): stored wrapped with AES-256-GCM
//!   under the KEK in `<state_dir>/keys/<hex of the user name>.key` (76 bytes: the label `FTPSDK01`, the
//!   KEK's fingerprint, a random 96-bit nonce, the sealed key; the AAD binds the label, the fingerprint and the
//!   user name, so a key file moved to another user's name fails to open).
//! - **File keys**: derived from the data key per file by HKDF in the storage layer's file format
//!   (`storage::encrypted`, not this module).
//!
//! **Back up both the KEK and `<state_dir>/keys/`** (after every rotation, the new KEK): losing either one loses
//! every encrypted file; neither alone decrypts anything.
//!
//! **The KMS hook contract** (`kek_command = ["prog", "arg", ...]`): run without a shell, stdin empty, at start
//! (and by `ftps-server keys`); it must exit 0 within `kek_command_timeout` seconds having printed exactly 64 hex
//! characters (the 32-byte KEK; a trailing newline is fine) on stdout, and the same KEK every time. stderr is
//! shown in the error when it fails. It may print nothing else on stdout.
//!
//! **Rotation** ([`mod@rotate`]) re-wraps every data key under a new KEK, never touching file data. While it runs a
//! key file is wrapped under the current or the new ("pending") KEK, and the [`Keyring`] opens either (it picks
//! by the fingerprint stored in the file), so a rotation may run while the server runs and may be killed at any
//! point and run again.

mod kek;
pub mod rotate;
mod wrap;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::kek::{hex, invalid, random_bytes, write_file, Place};
pub use self::kek::{Kek, KekSource};
pub use self::rotate::{rotate, RotateOutcome};
use self::wrap::{key_path, seal, user_of, Wrapped};
use crate::config::ConfigError;

/// The folder of wrapped data keys inside `state_dir`.
pub const KEYS_DIR: &str = "keys";
/// The marker a rotation to another KEK source leaves in `state_dir` (TOML: `kek_file = "..."` or
/// `kek_command = [...]`) until the configuration names that source.
pub const PENDING_MARKER: &str = "kek.pending";

/// `[encryption]`: files encrypted at rest with a data key per user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Encrypt users' files at rest (`ftps-server --encrypt` sets it too). Off by default.
    pub enabled: bool,
    /// File holding the KEK as 64 hex characters, mode 0600; generated on first start when missing. Unset (and
    /// no `kek_command`): `<state_dir>/kek`.
    pub kek_file: Option<PathBuf>,
    /// Program and arguments (no shell) printing the KEK as 64 hex characters: a KMS hook. Excludes `kek_file`.
    pub kek_command: Option<Vec<String>>,
    /// Seconds `kek_command` may take.
    pub kek_command_timeout: u64,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            kek_file: None,
            kek_command: None,
            kek_command_timeout: 30,
        }
    }
}

impl EncryptionConfig {
    /// Checks that at most one KEK source is named and that it is usable as written.
    ///
    /// # Errors
    /// Both sources, an empty command, or a zero timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("[encryption] {m}")));
        match (&self.kek_file, &self.kek_command) {
            (Some(_), Some(_)) => return invalid("kek_file and kek_command exclude each other"),
            (_, Some(argv)) if argv.first().is_none_or(String::is_empty) => {
                return invalid("kek_command needs a program")
            }
            _ => {}
        }
        if self.kek_command_timeout == 0 {
            return invalid("kek_command_timeout must be greater than 0");
        }
        Ok(())
    }

    /// Where the KEK comes from, with `state_dir` for the default file.
    #[must_use]
    pub fn source(&self, state_dir: &Path) -> KekSource {
        match (&self.kek_command, &self.kek_file) {
            (Some(argv), _) => KekSource::KekCommand(argv.clone()),
            (None, Some(path)) => KekSource::KekFile(path.clone()),
            (None, None) => KekSource::KekFile(state_dir.join("kek")),
        }
    }

    /// `kek_command_timeout` as a duration.
    #[must_use]
    pub fn kek_command_timeout(&self) -> Duration {
        Duration::from_secs(self.kek_command_timeout)
    }
}

/// Where a configured keyring re-reads its KEKs, so that it follows a rotation made by another process.
#[derive(Debug)]
struct Origin {
    source: KekSource,
    state_dir: PathBuf,
    timeout: Duration,
}

/// The KEKs a keyring knows.
struct Keks {
    current: Kek,
    /// The KEK a rotation is moving to, and where it came from: new keys are wrapped under it.
    pending: Option<(KekSource, Kek)>,
    /// KEKs this process used before a rotation replaced them: key files still wrapped under one open.
    retired: Vec<Kek>,
}

impl Keks {
    fn find(&self, fingerprint: &[u8; 8]) -> Option<Kek> {
        std::iter::once(&self.current)
            .chain(self.pending.as_ref().map(|(_, kek)| kek))
            .chain(&self.retired)
            .find(|kek| &kek.fingerprint() == fingerprint)
            .cloned()
    }

    /// The KEK new key files are wrapped under.
    fn wrapping(&self) -> Kek {
        self.pending
            .as_ref()
            .map_or(&self.current, |(_, kek)| kek)
            .clone()
    }

    fn describe(&self) -> String {
        let mut known = format!(
            "the configured KEK has fingerprint {}",
            hex(&self.current.fingerprint())
        );
        if let Some((source, kek)) = &self.pending {
            known.push_str(&format!(
                ", the pending one ({source}) {}",
                hex(&kek.fingerprint())
            ));
        }
        known
    }
}

/// The users' data keys: unwrapped on first use and kept in memory, created (and stored wrapped) for a user who
/// has none yet. Thread-safe; its methods block on small file reads and writes (and, for a configured keyring
/// following a rotation, possibly on `kek_command`), so async callers run them on a blocking thread.
pub struct Keyring {
    dir: PathBuf,
    keks: Mutex<Keks>,
    origin: Option<Origin>,
    cache: Mutex<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
            .field("fingerprint", &hex(&self.current_fingerprint()))
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring over the key files in `dir` (created, mode 0700, if missing) with one fixed KEK. Library use and
    /// tests; the server uses [`Keyring::from_config`], which also follows rotations.
    ///
    /// # Errors
    /// When `dir` cannot be created.
    pub fn open(dir: &Path, kek: Kek) -> io::Result<Self> {
        Self::with(dir, kek, None, None)
    }

    /// The keyring `[encryption]` describes: the KEK from its source (a missing `kek_file` is generated), the
    /// pending KEK of an unfinished rotation if any, and the key files in `<state_dir>/keys/`. Checks every key
    /// file's KEK fingerprint: refuses to start when key files exist and none is wrapped under a known KEK (the
    /// wrong KEK is configured), and warns about files under an unknown one.
    ///
    /// # Errors
    /// An unusable KEK source (unsafe or malformed file, failing command), an unreadable keys folder, or a KEK
    /// that opens none of the existing key files.
    pub fn from_config(config: &EncryptionConfig, state_dir: &Path) -> io::Result<Self> {
        let source = config.source(state_dir);
        let timeout = config.kek_command_timeout();
        let current = source.load_or_create(timeout)?;
        let origin = Origin {
            source,
            state_dir: state_dir.to_owned(),
            timeout,
        };
        let pending = load_pending(&origin, None)?;
        let finished = pending
            .as_ref()
            .is_some_and(|(source, _)| *source == origin.source);
        let keyring = Self::with(&state_dir.join(KEYS_DIR), current, pending, Some(origin))?;
        let all_current = keyring.check_files()?;
        if finished && all_current {
            // The configuration now names the rotation's new source and every key is under it: done.
            let marker = state_dir.join(PENDING_MARKER);
            std::fs::remove_file(&marker)?;
            kek::sync_dir(state_dir)?;
            keyring.keks().pending = None;
            tracing::info!(marker = %marker.display(), "KEK rotation complete: removed its marker");
        }
        Ok(keyring)
    }

    fn with(
        dir: &Path,
        current: Kek,
        pending: Option<(KekSource, Kek)>,
        origin: Option<Origin>,
    ) -> io::Result<Self> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("keys folder {}: {e}", dir.display())))?;
        Ok(Self {
            dir: dir.to_owned(),
            keks: Mutex::new(Keks {
                current,
                pending,
                retired: Vec::new(),
            }),
            origin,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The folder of key files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fingerprint of the KEK in effect ([`Kek::fingerprint`]).
    #[must_use]
    pub fn current_fingerprint(&self) -> [u8; 8] {
        self.keks().current.fingerprint()
    }

    /// The users that have a key file, sorted.
    ///
    /// # Errors
    /// When the keys folder cannot be read.
    pub fn users(&self) -> io::Result<Vec<String>> {
        let mut users = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(user) = entry?.file_name().to_str().and_then(user_of) {
                users.push(user);
            }
        }
        users.sort();
        Ok(users)
    }

    /// `user`'s data key, created on first use: 32 random bytes, stored wrapped before they are returned. Two
    /// callers (threads or processes) creating the same user's key at once end with the same key.
    ///
    /// # Errors
    /// A key file that is damaged, bound to another user, or wrapped under an unknown KEK (never replaced by a
    /// new key: that would make the user's files unreadable); an unusable user name; I/O errors.
    pub fn data_key(&self, user: &str) -> io::Result<[u8; 32]> {
        if let Some(key) = self.existing_data_key(user)? {
            return Ok(key);
        }
        let path = key_path(&self.dir, user)?;
        // Losing the creation race twice in a row means the file keeps vanishing: say so instead of looping.
        for _ in 0..3 {
            self.refresh()?;
            let kek = self.keks().wrapping();
            let key: [u8; 32] = random_bytes()?;
            if write_file(&path, &seal(&kek, user, &key)?, Place::Exclusive)? {
                // A rotation that listed the keys folder before this file existed does not re-wrap it: look
                // again now that it exists, and re-wrap it ourselves if the KEK moved on meanwhile.
                self.refresh()?;
                let newest = self.keks().wrapping();
                if newest != kek {
                    write_file(&path, &seal(&newest, user, &key)?, Place::Replace)?;
                }
                tracing::info!(user, "created the user's data key");
                return Ok(self.remember(user, key));
            }
            if let Some(key) = self.existing_data_key(user)? {
                return Ok(key);
            }
        }
        Err(io::Error::other(format!(
            "key file {} keeps disappearing while it is created",
            path.display()
        )))
    }

    /// `user`'s data key if the user has one; never creates one (for tools that read files).
    ///
    /// # Errors
    /// As [`Keyring::data_key`].
    pub fn existing_data_key(&self, user: &str) -> io::Result<Option<[u8; 32]>> {
        if let Some(key) = self.lock_cache().get(user) {
            return Ok(Some(*key));
        }
        let path = key_path(&self.dir, user)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let wrapped = Wrapped::parse(&bytes, &path)?;
        let fingerprint = wrapped.fingerprint();
        // Bound first: the lock guard must be gone before `refresh` takes the lock again.
        let found = self.keks().find(&fingerprint);
        let kek = match found {
            Some(kek) => kek,
            None => {
                // Wrapped by a rotation this process has not seen yet?
                self.refresh()?;
                let keks = self.keks();
                keks.find(&fingerprint).ok_or_else(|| {
                    invalid(format!(
                        "key file {} of user {user:?} is wrapped under a KEK with fingerprint {}, but {}: is \
                         kek_file / kek_command the right one?",
                        path.display(),
                        hex(&fingerprint),
                        keks.describe()
                    ))
                })?
            }
        };
        let key = wrapped.open(&kek, user, &path)?;
        Ok(Some(self.remember(user, key)))
    }

    /// Caches `key`, or returns the key another thread cached first (both came from the same file).
    fn remember(&self, user: &str, key: [u8; 32]) -> [u8; 32] {
        *self.lock_cache().entry(user.to_owned()).or_insert(key)
    }

    /// Re-reads the KEKs from the configured source when a rotation may have changed them: a `kek_file` (cheap:
    /// a small file) and the pending KEK. A `kek_command` is not run again for the current KEK: the configuration
    /// a running server read does not change.
    fn refresh(&self) -> io::Result<()> {
        let Some(origin) = &self.origin else {
            return Ok(());
        };
        let current = match &origin.source {
            KekSource::KekFile(_) => Some(origin.source.load(origin.timeout)?),
            KekSource::KekCommand(_) => None,
        };
        let known = self.keks().pending.clone();
        let pending = load_pending(origin, known)?;
        let mut keks = self.keks();
        if let Some(current) = current {
            if current != keks.current {
                let old = std::mem::replace(&mut keks.current, current);
                keks.retired.push(old);
            }
        }
        if let Some(pending) = pending {
            if let Some((_, old)) = keks.pending.replace(pending) {
                keks.retired.push(old);
            }
        }
        keks.retired.dedup();
        Ok(())
    }

    /// Reads every key file's KEK fingerprint (not its key): see [`Keyring::from_config`]. Returns whether
    /// every key file is wrapped under the current KEK.
    fn check_files(&self) -> io::Result<bool> {
        let current = self.current_fingerprint();
        let (mut known, mut unknown, mut all_current) = (0usize, Vec::new(), true);
        for user in self.users()? {
            let path = key_path(&self.dir, &user)?;
            let bytes = std::fs::read(&path)?;
            let parsed = Wrapped::parse(&bytes, &path).map(|w| w.fingerprint());
            all_current &= parsed.as_ref().is_ok_and(|f| *f == current);
            let found = parsed.as_ref().is_ok_and(|f| self.keks().find(f).is_some());
            match parsed {
                Ok(_) if found => known += 1,
                Ok(fingerprint) => unknown.push((user, hex(&fingerprint))),
                Err(e) => tracing::warn!(error = %e, "a user's key file is damaged"),
            }
        }
        let keks = self.keks();
        let configured = self.origin.as_ref().map(|o| &o.source);
        if let Some((source, _)) = keks.pending.as_ref().filter(|(s, _)| Some(s) != configured) {
            tracing::warn!(%source, "a KEK rotation is pending: finish it with `ftps-server keys rotate`, \
                then name the new KEK in [encryption] if it is not the generated kek_file");
        }
        if unknown.is_empty() {
            return Ok(all_current);
        }
        let sample: Vec<String> = unknown
            .iter()
            .take(5)
            .map(|(user, fingerprint)| format!("{user:?} ({fingerprint})"))
            .collect();
        let message = format!(
            "{} key file(s) in {} are wrapped under an unknown KEK, e.g. {}; {}",
            unknown.len(),
            self.dir.display(),
            sample.join(", "),
            keks.describe()
        );
        if known == 0 {
            return Err(invalid(format!("{message}: wrong kek_file / kek_command?")));
        }
        tracing::warn!("{message}: those users cannot log in");
        Ok(false)
    }

    fn keks(&self) -> std::sync::MutexGuard<'_, Keks> {
        // The data behind the lock stays valid if a holder panicked: keep serving.
        self.keks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u8; 32]>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The pending source of a rotation: the marker a rotation to another source leaves, else `<kek_file>.new`.
pub(crate) fn pending_source(
    source: &KekSource,
    state_dir: &Path,
) -> io::Result<Option<KekSource>> {
    let marker = state_dir.join(PENDING_MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            return toml::from_str(&text)
                .map(Some)
                .map_err(|e| invalid(format!("{}: {e}", marker.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", marker.display()),
            ))
        }
    }
    if let KekSource::KekFile(path) = source {
        let new = new_kek_path(path);
        if new.exists() {
            return Ok(Some(KekSource::KekFile(new)));
        }
    }
    Ok(None)
}

/// Where a rotation of a `kek_file` puts the new KEK until it replaces the file: `<kek_file>.new`.
pub(crate) fn new_kek_path(kek_file: &Path) -> PathBuf {
    let mut name = kek_file.file_name().unwrap_or_default().to_owned();
    name.push(".new");
    kek_file.with_file_name(name)
}

/// The pending KEK, reusing `known` when it came from the same source (a command is not run again).
fn load_pending(
    origin: &Origin,
    known: Option<(KekSource, Kek)>,
) -> io::Result<Option<(KekSource, Kek)>> {
    let Some(source) = pending_source(&origin.source, &origin.state_dir)? else {
        return Ok(None);
    };
    if let Some(known) = known.filter(|(s, _)| *s == source) {
        return Ok(Some(known));
    }
    match source.load(origin.timeout) {
        Ok(kek) => Ok(Some((source, kek))),
        // `<kek_file>.new` was just renamed over the KEK file by the rotation: nothing is pending any more.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("pending KEK of a rotation: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests;
