//! Upstream: how the gateway reaches backends.
//!
//! Owns the TLS trust for https/wss backends (system roots plus an optional `ca_file`), the
//! source addresses connections leave from, and how a connection is made: single HTTP/1
//! connections (which the proxy shares and keeps per worker thread) and dedicated connections
//! for WebSocket upgrades; and, per backend, its targets ([`pool`]):
//! which one takes a request ([`balance`]), whether it is up ([`health`], [`breaker`]), what
//! its settings are ([`settings`]). Knows nothing of routes or client connections. Backend
//! host names are resolved at connect time through the gateway's [`Resolver`] ([`dns`]).

pub mod balance;
pub mod breaker;
pub mod dns;
pub mod health;
pub mod pool;
pub mod replay;
pub mod settings;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::io::TcpOrTls;
use crate::routing::{BackendUrl, Scheme};
use crate::telemetry::Counted;
pub use dns::Resolver;
use pool::TargetState;
use replay::Replay;

/// Why a backend could not be reached or trusted.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile { path: PathBuf, source: io::Error },
    #[error("the CA file {path} holds no usable certificate")]
    CaEmpty { path: PathBuf },
    #[error("connecting to {authority} timed out after {timeout:?}")]
    ConnectTimeout {
        authority: String,
        timeout: Duration,
    },
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: io::Error,
    },
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        authority: String,
        source: io::Error,
    },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("cannot resolve the backend host {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot set up DNS resolution: {0}")]
    Resolver(String),
    #[error("the backend source address {address} cannot be used on this machine: {source}")]
    Source { address: IpAddr, source: io::Error },
    #[error("HTTP/1 handshake with {authority} failed: {source}")]
    Handshake {
        authority: String,
        source: hyper::Error,
    },
}

/// The longest response head read from a backend (status line and headers), near Envoy's
/// 60 KiB default; a longer one fails the exchange (502), as nginx's "upstream sent too big
/// header" does, instead of buffering up to hyper's default of ~400 KiB per connection.
/// (hyper checks it between reads, so a head that arrives at once may pass it by up to a read.)
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The sending half of one HTTP/1 connection to a backend (see [`Upstream::connect_http`]).
/// Request bodies stream from the client to the backend, counted on the way.
pub type HttpSender = hyper::client::conn::http1::SendRequest<Replay<Counted<Incoming>>>;

/// One way of reaching backends: a trust store, a connect timeout and the source addresses.
#[derive(Clone)]
pub struct Upstream {
    /// ALPN `http/1.1` only: every backend connection speaks HTTP/1.1 (WebSocket upgrades
    /// need it).
    tls: TlsConnector,
    resolver: Resolver,
    connect_timeout: Duration,
    sources: Sources,
    identity: UpstreamId,
}

/// The local addresses connections leave from, by family, taken in turn (none: the kernel's
/// choice).
#[derive(Clone, Default)]
struct Sources {
    v4: Arc<[IpAddr]>,
    v6: Arc<[IpAddr]>,
    next: Arc<AtomicUsize>,
}

impl Sources {
    fn new(addresses: &[IpAddr]) -> Self {
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addresses.iter().partition(|ip| ip.is_ipv4());
        Sources {
            v4: v4.into(),
            v6: v6.into(),
            next: Arc::default(),
        }
    }

    /// Connects to `addr` from the next source address of its family (the kernel's choice
    /// when there is none). A source whose ports are used up, or that this machine does not
    /// have, is passed over for the next.
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let family = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        if family.is_empty() {
            return TcpStream::connect(addr).await;
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut refused = None;
        for turn in 0..family.len() {
            let Some(&source) = family.get((first + turn) % family.len()) else {
                break;
            };
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            match bind_source(&socket, source) {
                Ok(()) => return socket.connect(addr).await,
                Err(error) => {
                    refused = Some(io::Error::new(
                        error.kind(),
                        format!("source address {source} cannot be used: {error}"),
                    ));
                }
            }
        }
        Err(refused.unwrap_or_else(|| io::Error::other("no source address to connect from")))
    }
}

/// Binds `socket` to `source`, leaving the port to `connect` where the kernel allows
/// (`IP_BIND_ADDRESS_NO_PORT`, Linux 4.2+, as nginx's `proxy_bind` does): the port is then
/// picked for the whole four-tuple, so one source address serves ~28,000 connections per
/// backend address instead of ~28,000 in all, and binding does not search for a port that
/// no other socket on that address holds.
fn bind_source(socket: &TcpSocket, source: IpAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Err(error) = nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    ) {
        tracing::debug!(%error, "IP_BIND_ADDRESS_NO_PORT unavailable: the port is taken at bind");
    }
    socket.bind(SocketAddr::new(source, 0))
}

/// Which [`Upstream`] (trust and connect timeout) something belongs to; its clones share it.
#[derive(Clone, Debug, Default)]
pub struct UpstreamId(Arc<()>);

impl PartialEq for UpstreamId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Upstream {
    pub fn new(
        ca_file: Option<&Path>,
        connect_timeout: Duration,
        sources: &[IpAddr],
        resolver: Resolver,
    ) -> Result<Self, UpstreamError> {
        // A source address this machine does not have is refused with the configuration.
        for &address in sources {
            std::net::UdpSocket::bind((address, 0))
                .map_err(|source| UpstreamError::Source { address, source })?;
        }
        let roots = root_store(ca_file)?;
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls {
            authority: String::new(),
            source: io::Error::other(e),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Upstream {
            tls: TlsConnector::from(Arc::new(tls)),
            resolver,
            connect_timeout,
            sources: Sources::new(sources),
            identity: UpstreamId::default(),
        })
    }

    pub fn id(&self) -> &UpstreamId {
        &self.identity
    }

    /// A fresh HTTP/1 connection to `target` (TLS for https backends): connected as
    /// [`Upstream::connect`] does, its connection task spawned, counted on the target while
    /// it is open. It closes once every sender is dropped and its last response has ended.
    pub async fn connect_http(
        &self,
        target: &Arc<TargetState>,
    ) -> Result<HttpSender, UpstreamError> {
        let backend = target.url();
        let stream = self.connect(backend).await?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_RESPONSE_HEAD)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake {
                authority: backend.authority().to_owned(),
                source,
            })?;
        let open = target.http_connection();
        tokio::spawn(async move {
            let _open = open;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A fresh connection to `backend` (TLS for https backends) for a WebSocket upgrade, an
    /// HTTP/1 connection or a health probe; never kept here.
    /// Resolving and connecting share the connect timeout; the resolved addresses are
    /// tried in order until one connects.
    pub async fn connect(&self, backend: &BackendUrl) -> Result<BackendStream, UpstreamError> {
        let authority = backend.authority().to_owned();
        let connecting = async {
            let addrs = self
                .resolver
                .resolve(backend.host(), backend.port())
                .await?;
            let mut last = None;
            for addr in addrs {
                match self.sources.connect(addr).await {
                    Ok(tcp) => return Ok(tcp),
                    Err(error) => last = Some(error),
                }
            }
            let source = last.unwrap_or_else(|| io::Error::other("no address to connect to"));
            Err(UpstreamError::Connect {
                authority: authority.clone(),
                source,
            })
        };
        let tcp = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    authority,
                    timeout: self.connect_timeout,
                });
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        match backend.scheme() {
            Scheme::Http => Ok(TcpOrTls::Plain(tcp)),
            Scheme::Https => {
                let name = ServerName::try_from(backend.host().to_owned())
                    .map_err(|_| UpstreamError::ServerName(backend.host().to_owned()))?;
                let handshake = self.tls.connect(name, tcp);
                match tokio::time::timeout(self.connect_timeout, handshake).await {
                    Err(_) => Err(UpstreamError::ConnectTimeout {
                        authority,
                        timeout: self.connect_timeout,
                    }),
                    Ok(Err(source)) => Err(UpstreamError::Tls { authority, source }),
                    Ok(Ok(tls)) => Ok(TcpOrTls::Tls(Box::new(tls))),
                }
            }
        }
    }
}

/// Builds [`Upstream`]s once per distinct (CA file, connect timeout, source addresses) and
/// shares them, so proxies with the same trust share their backend connections. All resolve
/// through one resolver.
pub struct UpstreamCache {
    built: HashMap<(Option<PathBuf>, Duration, Vec<IpAddr>), Upstream>,
    resolver: Resolver,
}

impl UpstreamCache {
    pub fn new(resolver: Resolver) -> Self {
        UpstreamCache {
            built: HashMap::new(),
            resolver,
        }
    }

    pub fn get(
        &mut self,
        ca_file: Option<&Path>,
        connect_timeout: Duration,
        sources: &[IpAddr],
    ) -> Result<Upstream, UpstreamError> {
        let key = (
            ca_file.map(Path::to_path_buf),
            connect_timeout,
            sources.to_vec(),
        );
        if let Some(found) = self.built.get(&key) {
            return Ok(found.clone());
        }
        let built = Upstream::new(ca_file, connect_timeout, sources, self.resolver.clone())?;
        self.built.insert(key, built.clone());
        Ok(built)
    }
}

/// A connection to a backend for a WebSocket session (or an active health check).
pub type BackendStream = TcpOrTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// System roots (loaded once per process) plus the optional extra CA file.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, UpstreamError> {
    static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::debug!(%error, "skipping a system root certificate");
        }
        loaded.certs
    });
    let mut roots = RootCertStore::empty();
    let _ = roots.add_parsable_certificates(system.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| UpstreamError::CaFile {
                path: path.to_path_buf(),
                source: io::Error::other(e),
            })?
            .filter_map(Result::ok)
            .collect();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(UpstreamError::CaEmpty {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bound to a source address, a socket reserves no port until it connects (so the port
    /// is picked per destination); connected, it leaves from that address.
    #[tokio::test]
    async fn a_source_bound_socket_takes_its_port_at_connect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        bind_source(&socket, source).unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket.local_addr().unwrap(),
            SocketAddr::new(source, 0),
            "no port reserved at bind"
        );
        let stream = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), source);
        assert_ne!(local.port(), 0);
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(
            peer, local,
            "the backend sees the source address and the port"
        );
    }
}
