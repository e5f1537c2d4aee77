//! `SITE` sub-commands (RFC 959 section 4.1.3 leaves their syntax to the server).
//!
//! [`Command::Site`](super::Command::Site) carries the raw text; [`SiteCommand::parse`] types the few
//! sub-commands the engine knows. Format-then-parse is the identity on values.

use std::fmt;

use super::command::{CommandError, CommandErrorKind};

/// The highest mode `SITE CHMOD` accepts: permission bits plus setuid, setgid and sticky.
const MAX_MODE: u32 = 0o7777;

/// The text of a `SITE` command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SiteCommand {
    /// `SITE CHMOD mode path`: `mode` in octal (at most `7777`), `path` raw (spaces kept).
    Chmod {
        /// Permission bits.
        mode: u32,
        /// The file to change.
        path: String,
    },
    /// `SITE HELP [topic]`
    Help(Option<String>),
    /// Any other sub-command.
    Other {
        /// The sub-command name, upper-cased.
        name: String,
        /// The raw text after the name, when present.
        argument: Option<String>,
    },
}

impl SiteCommand {
    /// Parses the argument of `SITE` (the text after `SITE `). Names are case-insensitive; a malformed
    /// `CHMOD` or an empty name is a 501 error.
    pub fn parse(text: &str) -> Result<Self, CommandError> {
        let syntax = || CommandError {
            verb: Some("SITE".to_owned()),
            kind: CommandErrorKind::Syntax,
        };
        let (name, argument) = match text.split_once(' ') {
            Some((name, argument)) => (name, Some(argument).filter(|a| !a.is_empty())),
            None => (text, None),
        };
        if name.is_empty() {
            return Err(syntax());
        }
        if name.eq_ignore_ascii_case("CHMOD") {
            let (mode, path) = argument
                .and_then(|a| a.split_once(' '))
                .ok_or_else(syntax)?;
            let valid_mode = !mode.is_empty()
                && mode.len() <= 12
                && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
            let mode = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|&m| valid_mode && m <= MAX_MODE)
                .ok_or_else(syntax)?;
            if path.is_empty() {
                return Err(syntax());
            }
            Ok(Self::Chmod {
                mode,
                path: path.to_owned(),
            })
        } else if name.eq_ignore_ascii_case("HELP") {
            Ok(Self::Help(argument.map(str::to_owned)))
        } else {
            Ok(Self::Other {
                name: name.to_ascii_uppercase(),
                argument: argument.map(str::to_owned),
            })
        }
    }
}

impl fmt::Display for SiteCommand {
    /// The text after `SITE `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chmod { mode, path } => write!(f, "CHMOD {mode:o} {path}"),
            Self::Help(None) => f.write_str("HELP"),
            Self::Help(Some(topic)) => write!(f, "HELP {topic}"),
            Self::Other {
                name,
                argument: None,
            } => f.write_str(name),
            Self::Other {
                name,
                argument: Some(argument),
            } => write!(f, "{name} {argument}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chmod_with_spaces_in_path() {
        assert_eq!(
            SiteCommand::parse("CHMOD 755 a b"),
            Ok(SiteCommand::Chmod {
                mode: 0o755,
                path: "a b".into()
            })
        );
        assert_eq!(
            SiteCommand::parse("chmod 0644 x "),
            Ok(SiteCommand::Chmod {
                mode: 0o644,
                path: "x ".into()
            })
        );
        assert_eq!(
            SiteCommand::Chmod {
                mode: 0o4755,
                path: "a b".into()
            }
            .to_string(),
            "CHMOD 4755 a b"
        );
    }

    #[test]
    fn bad_chmod_is_syntax() {
        for bad in [
            "CHMOD",
            "CHMOD 755",
            "CHMOD 755 ",
            "CHMOD 789 a",
            "CHMOD +755 a",
            "CHMOD 17777 a",
            "CHMOD  a",
            "",
        ] {
            let err = SiteCommand::parse(bad).unwrap_err();
            assert_eq!(err.kind, CommandErrorKind::Syntax, "{bad:?}");
            assert_eq!(err.verb.as_deref(), Some("SITE"));
        }
    }

    #[test]
    fn help_and_other() {
        assert_eq!(SiteCommand::parse("help"), Ok(SiteCommand::Help(None)));
        assert_eq!(
            SiteCommand::parse("HELP CHMOD"),
            Ok(SiteCommand::Help(Some("CHMOD".into())))
        );
        assert_eq!(
            SiteCommand::parse("umask"),
            Ok(SiteCommand::Other {
                name: "UMASK".into(),
                argument: None
            })
        );
        assert_eq!(
            SiteCommand::parse("utime 20200101120000 f"),
            Ok(SiteCommand::Other {
                name: "UTIME".into(),
                argument: Some("20200101120000 f".into())
            })
        );
    }

    fn arb_site() -> impl Strategy<Value = SiteCommand> {
        let text = "\\PC{1,16}";
        prop_oneof![
            (0u32..=MAX_MODE, text).prop_map(|(mode, path)| SiteCommand::Chmod { mode, path }),
            proptest::option::of(text).prop_map(SiteCommand::Help),
            ("[^ ]{1,8}", proptest::option::of(text))
                .prop_map(|(name, argument)| SiteCommand::Other { name: name.to_ascii_uppercase(), argument })
                .prop_filter("a known name", |c| !matches!(c, SiteCommand::Other { name, .. } if name == "CHMOD" || name == "HELP")),
        ]
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(cmd in arb_site()) {
            prop_assert_eq!(SiteCommand::parse(&cmd.to_string()), Ok(cmd));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            if let Ok(cmd) = SiteCommand::parse(&text) {
                prop_assert_eq!(SiteCommand::parse(&cmd.to_string()), Ok(cmd));
            }
        }
    }
}
