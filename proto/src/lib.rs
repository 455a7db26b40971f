//! The `lb.v1` API, generated from `lb.proto` (whose comments are the API
//! reference), shared by `lbd` and `lbctl`.

#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("lb.v1");

    /// The encoded descriptors of `lb.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lb_descriptor");
}

/// A channel to `lbd`'s API on its Unix socket (`lbctl`, tests, `bench`).
pub async fn connect_unix(
    path: std::path::PathBuf,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    // The URI is required by the API but unused: the connector dials the socket.
    tonic::transport::Endpoint::from_static("http://lbd.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}
