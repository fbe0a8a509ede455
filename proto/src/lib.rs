//! The idm wire contract: the `idm.v1` gRPC API (messages, client and server
//! stubs, and the descriptor set for server reflection) and the SCIM filter
//! grammar, because a filter string is part of every query the API takes.

pub mod filter;
pub mod json;

/// Generated `idm.v1` types, clients and servers.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod v1 {
    tonic::include_proto!("idm.v1");
}

/// The encoded `FileDescriptorSet` of `idm.v1`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/idm_descriptor.bin"));
