//! Raw bindings to the system DPDK 22.11, generated at build time by bindgen
//! from `pkg-config libdpdk`, plus a C shim (`lb_*`) for the static-inline
//! functions, macros and thread-locals bindgen cannot emit.
//!
//! Everything here is `unsafe` to call; the safe layer is
//! `dataplane::dpdk`. Only the items the dataplane uses are generated.

// Raw FFI is this crate's purpose: the workspace's `unsafe_code = "deny"`
// does not apply here.
#![allow(unsafe_code)]
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks, clippy::ptr_as_ptr)]
// DPDK's C comments, copied by bindgen, are not rustdoc Markdown.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
