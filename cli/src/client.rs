//! A small HTTP/1.1 client for the commands that talk to a running edge or
//! aggregator (`canary`, `streams`): one keep-alive connection,
//! reopened when it breaks. Plain `http://` only; put TLS in front of the
//! edge with its proxy.

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::time::Duration;

/// An answer.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// A connection to one `http://host:port`.
pub struct Client {
    host: String,
    port: u16,
    base_path: String,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    /// A client for `url` (`http://host:port[/base]`).
    pub fn new(url: &str) -> anyhow::Result<Client> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("`{url}`: only http:// URLs are supported");
        }
        let host = uri.host().context("the URL has no host")?.to_owned();
        Ok(Client {
            port: uri.port_u16().unwrap_or(80),
            host,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            sender: None,
        })
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .context("no connection within 10 s")??;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends a request to `path` (under the base path); network failures are errors.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let Some(sender) = self.sender.as_mut() else {
            bail!("not connected");
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path))
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port));
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        let sent = tokio::time::timeout(
            Duration::from_secs(60),
            sender.send_request(req.body(Full::new(body))?),
        )
        .await;
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.sender = None;
                return Err(e.into());
            }
            Err(_) => {
                self.sender = None;
                bail!("no answer within 60 s");
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Answer { status, body })
    }
}
