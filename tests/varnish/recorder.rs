//! A recording HTTP/1.1 reverse proxy on 127.0.0.1:0: forwards every request
//! unchanged to one backend (one backend connection per client connection)
//! and logs what went through, so a test can see the requests a cache or a
//! browser really sent to the gateway and what it answered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// One request that went through and its answer's head.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub(crate) method: Method,
    /// Path and query.
    pub(crate) target: String,
    pub(crate) request: HeaderMap,
    pub(crate) status: StatusCode,
    pub(crate) response: HeaderMap,
}

/// The running proxy; stops accepting when dropped.
pub(crate) struct Recorder {
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts forwarding to `backend`.
    pub(crate) async fn start(backend: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = shared.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let Ok((sender, connection)) =
                        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await
                    else {
                        return;
                    };
                    tokio::spawn(connection);
                    let sender = Arc::new(tokio::sync::Mutex::new(sender));
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (sender, log) = (sender.clone(), log.clone());
                        async move {
                            let method = request.method().clone();
                            let target = request
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let headers = request.headers().clone();
                            let mut sender = sender.lock().await;
                            sender.ready().await?;
                            let response = sender.send_request(request).await?;
                            drop(sender);
                            log.lock().expect("lock").push(Exchange {
                                method,
                                target,
                                request: headers,
                                status: response.status(),
                                response: response.headers().clone(),
                            });
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, log, task }
    }

    /// Everything forwarded so far, in order of the answers.
    pub(crate) fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().expect("lock").clone()
    }
}
