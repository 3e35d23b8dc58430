//! RESP on the wire: our own request decoder, our own reply framer, and the replies the proxy
//! writes itself. Nothing here re-encodes a frame that passes through.

pub mod args;
pub mod encode;
pub mod reply;
pub mod request;
pub mod summary;
pub mod value;
