//! placeholder

pub mod url;
pub use url::{FtpUrl, Scheme, UrlError};
pub mod cli;
pub mod mirror;
pub mod progress;
