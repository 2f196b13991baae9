//! `bareproxy`: the least a reverse proxy can do, as the benchmark's reference point. It
//! forwards every request to one upstream over kept-alive HTTP/1.1 connections and streams the
//! answer back, nothing else (no parsing, no auth, no logs).
//!
//!   bareproxy --listen 127.0.0.1:0 --upstream http://127.0.0.1:PORT
//!
//! Prints `bareproxy listening on http://ADDR` once it accepts connections.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser, Debug)]
#[command(name = "bareproxy")]
struct Cli {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The upstream, `http://host:port`.
    #[arg(long)]
    upstream: Uri,
}

type Body = BoxBody<Bytes, hyper::Error>;

/// Request headers that belong to one hop only.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

async fn forward(
    mut req: Request<Incoming>,
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
) -> Result<Response<Body>, Infallible> {
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(upstream.clone());
    let Ok(uri) = Uri::from_parts(parts) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Ok(host) = header::HeaderValue::from_str(upstream.as_str()) {
        headers.insert(header::HOST, host);
    }
    match client.request(req).await {
        Ok(response) => Ok(response.map(BodyExt::boxed)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let upstream = cli
        .upstream
        .authority()
        .cloned()
        .context("--upstream needs host:port")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(connector);
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .context("cannot listen")?;
        println!("bareproxy listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    forward(req, client.clone(), upstream.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
