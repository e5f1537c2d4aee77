//! `ftps-server keys rotate`: every data key re-wrapped under a new KEK, file data untouched.
//!
//! The steps, each safe to be killed after:
//! 1. Record the new KEK's source: with the default `kek_file`, a new random KEK written to `<kek_file>.new`;
//!    with `--new-kek-command` / `--new-kek-file`, the marker `<state_dir>/kek.pending` naming that source (a
//!    KMS key never lands on disk). From here on every keyring, the server's included, opens key files wrapped
//!    under either KEK and wraps new ones under the new KEK.
//! 2. Re-wrap each key file still under the current KEK, one atomic replace per file.
//! 3. With the default `kek_file`: rename `<kek_file>.new` over `<kek_file>`. With another source, the operator
//!    changes the configuration (the outcome says what to write); until then the marker keeps both KEKs known,
//!    and the first start that finds every key under the configured KEK removes it.
//! 4. Sweep once more, for keys a running server created during step 2 under the old KEK.
//!
//! A re-run after a kill finds the pending source of step 1 and carries on (giving another `--new-kek-*` than
//! the pending one is refused).

use std::io;
use std::path::Path;

use super::kek::{hex, invalid, sync_dir, write_file, Kek, KekSource, Place};
use super::wrap::{key_path, seal, user_of, Wrapped};
use super::{new_kek_path, pending_source, EncryptionConfig, KEYS_DIR, PENDING_MARKER};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotateOutcome {
    /// Key files re-wrapped by this run.
    pub rewrapped: usize,
    /// Key files found already under the new KEK (an earlier, interrupted run, or keys created meanwhile).
    pub already: usize,
    /// The new KEK's fingerprint ([`Kek::fingerprint`]).
    pub fingerprint: [u8; 8],
    /// Where the new KEK now comes from.
    pub source: KekSource,
    /// The `[encryption]` line the operator must now put in the configuration (`None`: nothing to change, the
    /// default `kek_file` was replaced in place).
    pub config_change: Option<String>,
}

/// Rotates the KEK of the keys under `<state_dir>/keys/`: see the module docs. `new_source` is the new KEK's
/// source (required with a `kek_command`; optional with a `kek_file`, which otherwise gets a generated KEK).
///
/// # Errors
/// An unusable current or new KEK, a key file that is damaged or under an unknown KEK (nothing is swapped then:
/// fix or remove it and run again), a pending rotation to another source, or I/O errors.
pub fn rotate(
    config: &EncryptionConfig,
    state_dir: &Path,
    new_source: Option<KekSource>,
) -> io::Result<RotateOutcome> {
    rotate_until(config, state_dir, new_source, None)
}

/// [`rotate`], stopping (as a kill would) after re-wrapping `stop_after` files when it is set: for tests.
pub(crate) fn rotate_until(
    config: &EncryptionConfig,
    state_dir: &Path,
    new_source: Option<KekSource>,
    stop_after: Option<usize>,
) -> io::Result<RotateOutcome> {
    let source = config.source(state_dir);
    let timeout = config.kek_command_timeout();
    let current = source.load(timeout).map_err(|e| match (&source, e.kind()) {
        (KekSource::KekFile(_), io::ErrorKind::NotFound) => io::Error::new(
            e.kind(),
            format!("{e}: no KEK to rotate yet (the server makes it on its first start with encryption on)"),
        ),
        _ => e,
    })?;
    let marker = state_dir.join(PENDING_MARKER);
    let pending = pending_source(&source, state_dir)?;
    let target = match (pending, new_source) {
        (Some(pending), Some(new)) if pending != new => {
            return Err(invalid(format!(
                "a rotation to {pending} is pending (an earlier run stopped, or the configuration does not name \
                 that source yet): finish it first by running `ftps-server keys rotate` without \
                 --new-kek-command / --new-kek-file and naming it in [encryption]"
            )))
        }
        (Some(pending), _) => pending,
        (None, Some(new)) => {
            if new == source {
                return Err(invalid(format!("the new KEK source is the configured one ({new})")));
            }
            // Load it before recording it: a typo must fail here, not leave a marker nobody can follow.
            new.load(timeout)?;
            let text = toml::to_string(&new).map_err(|e| io::Error::other(e.to_string()))?;
            write_file(&marker, text.as_bytes(), Place::Replace)?;
            new
        }
        (None, None) => match &source {
            KekSource::KekFile(path) => {
                let new = new_kek_path(path);
                let kek = Kek::generate()?;
                // Exclusive: a concurrent run's `.new` wins, and this run adopts it.
                write_file(&new, format!("{}\n", kek.to_hex()).as_bytes(), Place::Exclusive)?;
                KekSource::KekFile(new)
            }
            KekSource::KekCommand(_) => {
                return Err(invalid(
                    "the KEK comes from kek_command: name the new one with --new-kek-command PROG ARGS... \
                     or --new-kek-file FILE"
                        .into(),
                ))
            }
        },
    };
    let new = target.load(timeout)?;
    let keys = state_dir.join(KEYS_DIR);
    let (mut rewrapped, mut already) = (0, 0);
    // With `new == current` (run again after the configuration was changed) this only checks that every key
    // file is under the configured KEK.
    let swept = sweep(&keys, &current, &new, stop_after)?;
    rewrapped += swept.0;
    already += swept.1;
    if stop_after.is_some_and(|limit| rewrapped >= limit) {
        return Err(io::Error::other("stopped as asked (test)"));
    }
    let config_change = match (&source, &target) {
        (KekSource::KekFile(path), KekSource::KekFile(new_path))
            if *new_path == new_kek_path(path) =>
        {
            std::fs::rename(new_path, path)?;
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
            None
        }
        (_, KekSource::KekFile(path)) => {
            Some(format!("kek_file = {:?}", path.display().to_string()))
        }
        (_, KekSource::KekCommand(argv)) => Some(format!(
            "kek_command = [{}]",
            argv.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    if new != current {
        let swept = sweep(&keys, &current, &new, None)?;
        rewrapped += swept.0;
    } else if marker.exists() {
        // Run again after the configuration was changed: the marker has served its purpose.
        std::fs::remove_file(&marker)?;
        sync_dir(state_dir)?;
    }
    Ok(RotateOutcome {
        rewrapped,
        already,
        fingerprint: new.fingerprint(),
        source: target,
        config_change: if new == current { None } else { config_change },
    })
}

/// Re-wraps every key file under `from` to `to`; returns (re-wrapped, already under `to`). Stops after
/// `stop_after` re-wraps when set. Fails, after going through every file, when any file is damaged or under
/// another KEK, so that the caller does not retire `from`.
fn sweep(
    dir: &Path,
    from: &Kek,
    to: &Kek,
    stop_after: Option<usize>,
) -> io::Result<(usize, usize)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    let (mut rewrapped, mut already, mut problems) = (0, 0, Vec::new());
    for entry in entries {
        let Some(user) = entry?.file_name().to_str().and_then(user_of) else {
            continue;
        };
        let path = key_path(dir, &user)?;
        let result = (|| {
            let wrapped = Wrapped::parse(&std::fs::read(&path)?, &path)?;
            let fingerprint = wrapped.fingerprint();
            if fingerprint == to.fingerprint() {
                return Ok(false);
            }
            if fingerprint != from.fingerprint() {
                return Err(invalid(format!(
                    "{} is wrapped under an unknown KEK (fingerprint {})",
                    path.display(),
                    hex(&fingerprint)
                )));
            }
            let key = wrapped.open(from, &user, &path)?;
            write_file(&path, &seal(to, &user, &key)?, Place::Replace)?;
            Ok(true)
        })();
        match result {
            Ok(true) => rewrapped += 1,
            Ok(false) => already += 1,
            Err(e) => problems.push(e.to_string()),
        }
        if stop_after.is_some_and(|limit| rewrapped >= limit) {
            break;
        }
    }
    if problems.is_empty() {
        Ok((rewrapped, already))
    } else {
        Err(invalid(format!(
            "{} key file(s) could not be re-wrapped, so the old KEK stays in use; fix or restore them and run \
             again: {}",
            problems.len(),
            problems.join("; ")
        )))
    }
}
