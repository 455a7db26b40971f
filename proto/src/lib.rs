//! The `lb.v1` API, generated from `lb.proto` (whose comments are the API
//! reference), shared by `lbd` and `lbctl`.

#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("lb.v1");

    /// The encoded descriptors of `lb.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lb_descriptor");
}
