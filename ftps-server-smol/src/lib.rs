//! The `ftps-server` library: the smol frontend of the ftps-rs engine.
//!
//! This crate owns sockets, timers, tasks and backends and contains no FTP logic (DESIGN.md,
//! "Frontends"): storage ([`storage`]) and authentication ([`auth`]) backends, configuration
//! ([`config`]), certificates ([`certs`]) and [`startup`], which turns a configuration into the
//! parts the server loop runs on.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
pub mod certs;
pub mod config;
pub mod events;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod requests;
pub mod server;
mod session;
mod shared;
pub mod startup;
pub mod storage;
mod timing;
mod transfer;
pub mod upload_check;
