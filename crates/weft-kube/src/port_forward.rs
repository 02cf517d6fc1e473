//! A port of a pod on this machine, as `kubectl port-forward` makes it: each local
//! connection is forwarded through the API server to the first running pod a selector
//! picks (what `weft dashboard` uses, as `istioctl dashboard` does).

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot list pods in {namespace}: {source}")]
    List {
        namespace: String,
        source: kube::Error,
    },
    #[error("no running pod in {namespace} matches {selector}: is it installed (weft install)?")]
    NoPod { namespace: String, selector: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The first running pod `selector` picks in `namespace`.
pub async fn running_pod(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<String, ForwardError> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| ForwardError::List {
            namespace: namespace.into(),
            source,
        })?;
    pods.items
        .into_iter()
        .find(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata.deletion_timestamp.is_none()
        })
        .and_then(|p| p.metadata.name)
        .ok_or_else(|| ForwardError::NoPod {
            namespace: namespace.into(),
            selector: selector.into(),
        })
}

/// Listens on `local` and forwards each connection to `port` of `pod`; returns the address
/// it listens on and the task that serves it.
pub async fn forward(
    client: Client,
    namespace: &str,
    pod: String,
    port: u16,
    local: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), ForwardError> {
    let listener = TcpListener::bind(local)
        .await
        .map_err(|source| ForwardError::Bind {
            addr: local,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ForwardError::Bind {
        addr: local,
        source,
    })?;
    let pods = Api::<Pod>::namespaced(client, namespace);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let (pods, pod) = (pods.clone(), pod.clone());
            tokio::spawn(async move {
                let mut forwarder = match pods.portforward(&pod, &[port]).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!("cannot forward to {pod}:{port}: {e}");
                        return;
                    }
                };
                let Some(mut upstream) = forwarder.take_stream(port) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                drop(upstream);
                let _ = forwarder.join().await;
            });
        }
    });
    Ok((addr, task))
}
