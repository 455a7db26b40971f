//! The `lb.v1` API, generated from `lb.proto` (whose comments are the API
//! reference), shared by `lbd` and `lbctl`.

#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("lb.v1");

    /// The encoded descriptors of `lb.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lb_descriptor");
}

/// The `q` quantile (0..=1) of the delays counted in `buckets` (in any
/// order, one bucket possibly repeated, e.g. several workers' buckets
/// concatenated), as the max_us of its bucket; `None` when there are none.
pub fn delay_quantile(buckets: &[v1::DelayBucket], q: f64) -> Option<u64> {
    let mut merged = std::collections::BTreeMap::new();
    for b in buckets {
        *merged.entry(b.max_us).or_insert(0u64) += b.count;
    }
    let n: u64 = merged.values().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
    let mut seen = 0;
    merged.into_iter().find_map(|(max_us, count)| {
        seen += count;
        (seen >= rank).then_some(max_us)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn b(max_us: u64, count: u64) -> v1::DelayBucket {
        v1::DelayBucket { max_us, count }
    }

    #[test]
    fn quantiles_over_merged_buckets() {
        assert_eq!(delay_quantile(&[], 0.5), None);
        // Two workers: 98 delays up to 3 µs, one up to 103, one up to 5119.
        let buckets = [b(3, 50), b(103, 1), b(3, 48), b(5119, 1)];
        assert_eq!(delay_quantile(&buckets, 0.0), Some(3));
        assert_eq!(delay_quantile(&buckets, 0.5), Some(3));
        assert_eq!(delay_quantile(&buckets, 0.98), Some(3));
        assert_eq!(delay_quantile(&buckets, 0.99), Some(103));
        assert_eq!(delay_quantile(&buckets, 1.0), Some(5119));
    }
}
