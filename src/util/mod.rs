//! The bottom layer: small helpers every subsystem shares and that depend on no other module of
//! the crate — hex and SHA-256 text ([`hex`]), random bytes and UUID-shaped ids ([`id`]).

pub mod hex;
pub mod id;
