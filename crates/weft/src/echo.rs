//! `weft echo`: a tiny HTTP/1.1 and HTTP/2 server that names itself, for examples and
//! smoke tests (what httpbin and helloworld are to Istio's samples). `?delay_ms=N` makes it
//! answer N ms late, as httpbin's `/delay`. With a certificate it serves HTTPS too, and its
//! plaintext port can redirect there, as a public site does, or require client certificates.
//!
//! `weft probe` (hidden): what the end-to-end tests run in pods in place of curl, a TCP
//! server and Istio's ext-authz sample, so that they need nothing but this binary.

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use weft_security::termination::{Clients, Termination};

#[derive(clap::Args)]
pub struct EchoArgs {
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Answer plain HTTP with a 301 to the same URL over https, as most public sites do.
    #[arg(long)]
    redirect_https: bool,
    /// Also serve HTTPS here (HTTP/1.1 and HTTP/2 by ALPN), with --cert and --key.
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Option<SocketAddr>,
    /// The server's certificate chain (PEM); on the local platform, a Workload's
    /// `publicCertificate`.
    #[arg(long, env = "TLS_CERT_FILE")]
    cert: Option<std::path::PathBuf>,
    #[arg(long, env = "TLS_KEY_FILE")]
    key: Option<std::path::PathBuf>,
    /// Require HTTPS clients to present a certificate chained to these CAs (PEM), as
    /// nginx's `ssl_verify_client on`.
    #[arg(long, requires = "tls_listen")]
    client_ca: Option<std::path::PathBuf>,
}

pub async fn serve(args: EchoArgs) -> anyhow::Result<()> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    let tls = match (args.tls_listen, args.cert, args.key) {
        (Some(addr), Some(cert), Some(key)) => Some((
            bind(addr).await?,
            CertFiles {
                name,
                cert,
                key,
                client_ca: args.client_ca,
                loaded: None,
            },
        )),
        _ => None,
    };
    let plain = bind(args.listen).await?;
    eprintln!("weft echo {name:?} listening on {}", args.listen);
    let redirect = args.redirect_https;
    let plaintext = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = plain.accept().await else {
                continue;
            };
            tokio::spawn(answer(TokioIo::new(stream), name, redirect));
        }
    });
    if let Some((listener, mut files)) = tls {
        let mut last_refusal = None;
        eprintln!(
            "weft echo {name:?} serving HTTPS on {}",
            listener.local_addr()?
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = match files.acceptor() {
                Ok(acceptor) => acceptor,
                Err(e) => {
                    // Once per reason: the kubelet's probes connect every half second.
                    let why = e.to_string();
                    if last_refusal.as_ref() != Some(&why) {
                        eprintln!("weft echo {name:?}: closing HTTPS connections: {why}");
                        last_refusal = Some(why);
                    }
                    continue;
                }
            };
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    answer(TokioIo::new(stream), name, false).await;
                }
            });
        }
    }
    Ok(plaintext.await?)
}

/// The HTTPS server's files, read again whenever one changes: on the local platform they
/// may be a secret volume's, which the platform writes once the Secret exists and rewrites
/// when it changes. Until they can be read, connections are closed.
struct CertFiles {
    name: &'static str,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_ca: Option<std::path::PathBuf>,
    loaded: Option<(Vec<std::time::SystemTime>, TlsAcceptor)>,
}

impl CertFiles {
    fn acceptor(&mut self) -> anyhow::Result<TlsAcceptor> {
        let paths: Vec<&std::path::Path> =
            [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
                .into_iter()
                .flatten()
                .map(|p| p.as_path())
                .collect();
        let stamps = paths
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some((_, acceptor)) = self.loaded.as_ref().filter(|(at, _)| *at == stamps) {
            return Ok(acceptor.clone());
        }
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let clients = match &self.client_ca {
            Some(ca) => Clients::Verified {
                ca_pem: read(ca)?,
                subject_alt_names: Vec::new(),
                required: true,
            },
            None => Clients::Anonymous,
        };
        let config = weft_security::termination::server_config(&Termination {
            chain_pem: &read(&self.cert)?,
            key_pem: &read(&self.key)?,
            clients,
            min_version: None,
            max_version: None,
            alpn: &[b"h2", b"http/1.1"],
        })?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        eprintln!(
            "weft echo {:?}: serving HTTPS with the certificate in {}",
            self.name,
            self.cert.display()
        );
        self.loaded = Some((stamps, acceptor.clone()));
        Ok(acceptor)
    }
}

/// Serves one connection: an answer that names this server, or the redirect to https.
async fn answer<IO>(io: TokioIo<IO>, name: &'static str, redirect: bool)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| async move {
        if redirect {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h))
                .unwrap_or(name);
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            return Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(http::StatusCode::MOVED_PERMANENTLY)
                    .header(http::header::LOCATION, format!("https://{host}{target}"))
                    .body(Full::new(Bytes::new()))
                    .expect("valid response"),
            );
        }
        if let Some(delay) = delay(req.uri()) {
            tokio::time::sleep(delay).await;
        }
        let user = req
            .headers()
            .get("end-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let body = format!(
            "{name} answered {} {} (end-user: {user})\n",
            req.method(),
            req.uri().path()
        );
        Ok(Response::builder()
            .header("x-served-by", name)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response"))
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

fn delay(uri: &Uri) -> Option<Duration> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay_ms="))?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

#[derive(clap::Subcommand)]
pub enum Probe {
    /// Call each target every interval until killed, printing one JSON line per attempt:
    /// `http://HOST:PORT/PATH` (a GET: status, body, x-weft-error), `tcp://HOST:PORT` (a line
    /// sent must come back), `tls://HOST:PORT` (a ClientHello naming HOST must be answered
    /// with a TLS record). Names resolve as the app's would (the pod's /etc/hosts).
    Call {
        #[arg(long, default_value_t = 250)]
        every_ms: u64,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Send back whatever arrives on each address: a plain TCP server.
    TcpEcho {
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
    },
    /// Istio's ext-authz sample's HTTP check: a request with `x-ext-authz: allow` gets 200
    /// and `x-ext-authz-check-result: allowed`, any other 403 with the sample's words.
    ExtAuthz {
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// The sample's answer when the header is missing or says anything but `allow`.
const EXT_AUTHZ_DENIED: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

async fn ext_authz(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                let allowed = req
                    .headers()
                    .get("x-ext-authz")
                    .is_some_and(|v| v == "allow");
                let (status, result, body) = if allowed {
                    (200, "allowed", "")
                } else {
                    (403, "denied", EXT_AUTHZ_DENIED)
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .header("x-ext-authz-check-result", result)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .expect("valid response"),
                )
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub async fn probe(command: Probe) -> anyhow::Result<()> {
    let tasks = match command {
        Probe::Call { every_ms, targets } => {
            let targets = targets
                .iter()
                .map(|t| Target::parse(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let every = Duration::from_millis(every_ms);
            targets
                .into_iter()
                .map(|t| tokio::spawn(t.call_every(every)))
                .collect::<Vec<_>>()
        }
        Probe::TcpEcho { listen } => {
            let mut tasks = Vec::new();
            for addr in listen {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
                eprintln!("weft probe tcp-echo listening on {addr}");
                tasks.push(tokio::spawn(echo_tcp(listener)));
            }
            tasks
        }
        Probe::ExtAuthz { listen } => {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            eprintln!("weft probe ext-authz listening on {listen}");
            vec![tokio::spawn(ext_authz(listener))]
        }
    };
    for t in tasks {
        t.await?;
    }
    Ok(())
}

async fn echo_tcp(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut from, mut to) = stream.split();
            let _ = tokio::io::copy(&mut from, &mut to).await;
        });
    }
}

enum Scheme {
    Http,
    Tcp,
    Tls,
}

struct Target {
    text: String,
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
}

/// What one HTTP attempt got back.
struct Answer {
    status: u16,
    body: String,
    hint: Option<String>,
}

/// The line a TCP probe sends and expects back.
const LINE: &[u8] = b"ping\n";
/// Longer than any delay the tests ask of `weft echo`.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    fn parse(text: &str) -> anyhow::Result<Target> {
        let bad = |why: &str| {
            anyhow::anyhow!(
                "{text:?}: {why} (http://HOST[:PORT]/PATH, tcp://HOST:PORT or tls://HOST:PORT)"
            )
        };
        let uri: Uri = text.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("tcp") => Scheme::Tcp,
            Some("tls") => Scheme::Tls,
            _ => return Err(bad("unknown scheme")),
        };
        let port = match (uri.port_u16(), &scheme) {
            (Some(port), _) => port,
            (None, Scheme::Http) => 80,
            (None, _) => return Err(bad("needs a port")),
        };
        Ok(Target {
            text: text.to_string(),
            scheme,
            host: uri.host().ok_or_else(|| bad("needs a host"))?.to_string(),
            port,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }

    async fn call_every(self, every: Duration) {
        loop {
            let started = Instant::now();
            let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, self.call())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")));
            let ms = started.elapsed().as_millis() as u64;
            let line = match outcome {
                Ok(Some(a)) => serde_json::json!({
                    "target": self.text, "ms": ms, "status": a.status, "body": a.body, "hint": a.hint,
                }),
                Ok(None) => serde_json::json!({"target": self.text, "ms": ms}),
                Err(error) => serde_json::json!({"target": self.text, "ms": ms, "error": error}),
            };
            println!("{line}");
            tokio::time::sleep(every).await;
        }
    }

    /// One attempt: an HTTP answer, or `None` for a TCP or TLS exchange that went as
    /// expected.
    async fn call(&self) -> Result<Option<Answer>, String> {
        // Through the system resolver, as the app a probe stands for resolves.
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match self.scheme {
            Scheme::Http => self.get(stream).await.map(Some),
            Scheme::Tcp => {
                stream.write_all(LINE).await.map_err(|e| e.to_string())?;
                let mut back = vec![0; LINE.len()];
                stream
                    .read_exact(&mut back)
                    .await
                    .map_err(|e| format!("closed before the echo: {e}"))?;
                if back == LINE {
                    Ok(None)
                } else {
                    Err(format!("echoed {:?}", String::from_utf8_lossy(&back)))
                }
            }
            Scheme::Tls => {
                let hello = weft_proxy::transport::sni::client_hello(&self.host);
                stream.write_all(&hello).await.map_err(|e| e.to_string())?;
                // A handshake record: a server's ServerHello, or an echo of the ClientHello.
                match stream.read_u8().await {
                    Ok(0x16) => Ok(None),
                    Ok(other) => Err(format!("answered with record type {other}, not TLS")),
                    Err(e) => Err(format!("closed without a TLS answer: {e}")),
                }
            }
        }
    }

    async fn get(&self, stream: TcpStream) -> Result<Answer, String> {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let host = if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let request = Request::get(self.path.as_str())
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let hint = response
            .headers()
            .get("x-weft-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{status}, then the body broke off: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            hint,
        })
    }
}
