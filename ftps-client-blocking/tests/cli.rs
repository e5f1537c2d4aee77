//! Runs the `ftps` binary: help, usage errors and exit codes.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::process::{Command, Output};

fn ftps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ftps"))
        .args(args)
        .env_remove("FTPS_PASSWORD")
        .output()
        .unwrap()
}

#[test]
fn help_lists_every_subcommand_and_exit_code() {
    let out = ftps(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["ls", "get", "put", "rm", "mkdir", "mv", "mirror"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{help}"
        );
    }
    for code in [
        "0  success",
        "1  usage error",
        "2  connection",
        "3  login refused",
        "4  remote file error",
        "5  transfer failed",
        "6  local I/O error",
    ] {
        assert!(help.contains(code), "{code:?} missing from:\n{help}");
    }
}

#[test]
fn bad_url_exits_1_with_one_line() {
    let out = ftps(&["ls", "http://example.com/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "ftps: bad URL http://example.com/: unsupported scheme \"http\" (expected ftps, ftpsi or ftp)\n"
    );
}

#[test]
fn unknown_option_exits_1_with_one_line() {
    let out = ftps(&["--bogus", "ls", "ftps://h/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("ftps: unexpected argument '--bogus'"),
        "{err}"
    );
}

#[test]
fn missing_password_without_terminal_exits_1() {
    // Stdin and stderr are pipes here, so there is no one to prompt.
    let out = ftps(&["ls", "ftps://alice@h/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("ftps: no password: put it in the URL or set FTPS_PASSWORD"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn resolved_command_reaches_the_client_seam() {
    let out = Command::new(env!("CARGO_BIN_EXE_ftps"))
        .args(["get", "ftps://alice@h/f"])
        .env("FTPS_PASSWORD", "pw")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, "ftps: client engine not wired yet\n");
    assert_eq!(out.status.code(), Some(2));
}
