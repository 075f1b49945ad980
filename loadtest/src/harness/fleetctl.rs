//! A small plain-HTTP control endpoint on loopback in the fleet's process, so the harness (another
//! process) can ask what a kubelet served and when: `GET /served/NODE` answers
//! `LAST_MS PREVIOUS_MS` (sample instants, unix milliseconds; `-` when absent), `GET /healthy`
//! answers the names of nodes without a fault, one a line.
//!
//! It exists only for measurement: freshness is the time from a kubelet serving a sample to the
//! API serving it, and only the fleet knows the first instant to the millisecond.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::fleet::FleetHandle;

/// Name of the file in the state directory holding the control endpoint's port.
pub const CONTROL_PORT_FILE: &str = "harness-control.port";

/// Why the control endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control endpoint: {0}")]
    Io(#[from] std::io::Error),
    #[error("control endpoint: {0}")]
    Http(#[from] hyper::Error),
    #[error("control endpoint: {0}")]
    Request(#[from] http::Error),
    #[error("control endpoint answered {0}")]
    Status(http::StatusCode),
    #[error("control endpoint: bad answer {0:?}")]
    Answer(String),
    #[error("control endpoint: timed out")]
    Timeout,
}

/// Serves the control endpoint on `127.0.0.1:0` until `stop`; returns the port once listening.
pub async fn serve(fleet: FleetHandle, stop: CancellationToken) -> Result<u16, ControlError> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => break,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let fleet = fleet.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let answer = answer(&fleet, req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(port)
}

fn answer(fleet: &FleetHandle, path: &str) -> http::Response<Full<Bytes>> {
    let (status, body) = if let Some(node) = path.strip_prefix("/served/") {
        match fleet.served(node) {
            Some(h) => {
                let prev = h
                    .previous
                    .map(|p| p.t_ms.to_string())
                    .unwrap_or_else(|| "-".to_owned());
                (http::StatusCode::OK, format!("{} {prev}\n", h.last.t_ms))
            }
            None => (http::StatusCode::OK, "- -\n".to_owned()),
        }
    } else if path == "/healthy" {
        let faulty: std::collections::HashSet<String> =
            fleet.faulty_nodes().into_iter().map(|(n, _)| n).collect();
        let body: String = fleet
            .addresses()
            .into_iter()
            .filter(|(n, _)| !faulty.contains(n))
            .map(|(n, _)| format!("{n}\n"))
            .collect();
        (http::StatusCode::OK, body)
    } else {
        (http::StatusCode::NOT_FOUND, String::new())
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// A client of the control endpoint over one keep-alive connection.
pub struct ControlClient {
    port: u16,
    send: Option<hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>>,
}

/// The sample instants a node served last, unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub last_ms: Option<i64>,
    pub previous_ms: Option<i64>,
}

impl ControlClient {
    pub fn new(port: u16) -> Self {
        ControlClient { port, send: None }
    }

    async fn get(&mut self, path: &str) -> Result<String, ControlError> {
        let fetch = async {
            if self.send.as_ref().is_none_or(|s| s.is_closed()) {
                let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await?;
                tcp.set_nodelay(true)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                self.send = Some(send);
            }
            let Some(send) = self.send.as_mut() else {
                return Err(ControlError::Timeout);
            };
            send.ready().await?;
            let req = http::Request::get(path)
                .header("host", "127.0.0.1")
                .body(http_body_util::Empty::<Bytes>::new())?;
            let response = send.send_request(req).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                return Err(ControlError::Status(status));
            }
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(5), fetch).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(e)) => {
                self.send = None;
                Err(e)
            }
            Err(_) => {
                self.send = None;
                Err(ControlError::Timeout)
            }
        }
    }

    /// What `node` served last.
    pub async fn served(&mut self, node: &str) -> Result<Served, ControlError> {
        let body = self.get(&format!("/served/{node}")).await?;
        let mut parts = body.split_whitespace();
        let mut field = || -> Result<Option<i64>, ControlError> {
            match parts.next() {
                Some("-") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| ControlError::Answer(body.clone())),
                None => Err(ControlError::Answer(body.clone())),
            }
        };
        let last_ms = field()?;
        let previous_ms = field()?;
        Ok(Served {
            last_ms,
            previous_ms,
        })
    }

    /// Names of the nodes without a fault.
    pub async fn healthy(&mut self) -> Result<Vec<String>, ControlError> {
        Ok(self
            .get("/healthy")
            .await?
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::kubelet::fault::FaultKind;

    #[tokio::test]
    async fn the_control_endpoint_tells_healthy_nodes_and_served_instants() {
        let dir = tempfile::tempdir().expect("dir");
        let fleet = Fleet::builder()
            .nodes(4)
            .pods_per_node(2)
            .port(0)
            .fault(FaultKind::Hang, 0.5)
            .expect("fraction")
            .start(dir.path())
            .await
            .expect("starts");
        let stop = CancellationToken::new();
        let port = serve(fleet.clone(), stop.clone()).await.expect("serves");
        let mut client = ControlClient::new(port);
        let healthy = client.healthy().await.expect("healthy");
        assert_eq!(healthy.len() + fleet.faulty_nodes().len(), 4);
        let node = healthy.first().expect("a healthy node");
        assert_eq!(
            client.served(node).await.expect("served"),
            Served {
                last_ms: None,
                previous_ms: None
            }
        );
        fleet.write_node_list().expect("node list");
        let before = crate::kubelet::now_ms();
        crate::scrape_all::run(crate::scrape_all::ScrapeConfig {
            state_dir: dir.path().to_path_buf(),
            interval: Duration::from_millis(100),
            duration: Duration::from_millis(150),
            timeout: Duration::from_secs(1),
            fleet_pid: None,
        })
        .await
        .expect("scrapes");
        let served = client.served(node).await.expect("served");
        let last = served.last_ms.expect("served once");
        assert!(last >= before, "{last} < {before}");
        stop.cancel();
        fleet.shutdown().await;
    }
}
