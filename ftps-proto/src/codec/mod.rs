//! The control-channel codec: everything that crosses the FTP control connection, as typed values. No I/O.

mod command;
mod features;
mod framing;
mod listing;
mod proxy;
mod reply;
mod site;
mod time;

pub use command::*;
pub use features::*;
pub use framing::*;
pub use listing::*;
pub use proxy::*;
pub use reply::*;
pub use site::*;
pub use time::*;
