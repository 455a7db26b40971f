//! The `lb.v1` API, generated from `lb.proto` (whose comments are the API
//! reference), shared by `lbd` and `lbctl`.

#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("lb.v1");
}
