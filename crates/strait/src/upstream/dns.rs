//! Backend name resolution at connect time.
//!
//! One [`Resolver`] per gateway serves every backend connection: HTTP, WebSocket upgrades
//! and health probes. Answers are cached for their records' TTL, so a changed DNS record
//! takes effect without a reload. IP literals never reach it; `localhost` and /etc/hosts
//! names are answered without the network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

use super::UpstreamError;

/// The longest a "no such name" or "no address" answer is kept, so a record that appears
/// is used soon. Positive answers keep their own TTL.
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(5);

/// Resolves backend host names; cheap to clone (one cache shared by the clones).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: TokioResolver,
    /// Why there are no name servers (the system configuration could not be read), if so.
    no_servers: Option<String>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// Asks `servers` when given, otherwise the name servers of /etc/resolv.conf (with its
    /// search domains and options). /etc/hosts is read once, here, in both cases.
    pub fn new(servers: Option<&[SocketAddr]>) -> Result<Resolver, UpstreamError> {
        let mut no_servers = None;
        let (config, mut options) = match servers {
            Some(servers) => (
                ResolverConfig::from_name_servers(servers.iter().map(name_server).collect()),
                ResolverOpts::default(),
            ),
            None => match hickory_resolver::system_conf::read_system_conf() {
                Ok(system) => system,
                Err(error) => {
                    let why = format!("cannot use /etc/resolv.conf: {error}");
                    tracing::warn!("{why}; backend host names resolve through /etc/hosts only");
                    no_servers = Some(why);
                    (
                        ResolverConfig::from_name_servers(Vec::new()),
                        ResolverOpts::default(),
                    )
                }
            },
        };
        // Both families, IPv4 first; connecting tries the addresses in that order.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Always;
        options.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|error| UpstreamError::Resolver(error.to_string()))?;
        Ok(Resolver {
            inner: Arc::new(Inner {
                resolver,
                no_servers,
            }),
        })
    }

    /// The addresses of `host` (IPv6 without brackets) with `port`, in the order to try.
    /// An IP literal is returned as is, without a lookup.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, UpstreamError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let failed = |reason: String| UpstreamError::Resolve {
            host: host.to_owned(),
            reason,
        };
        let lookup = match self.inner.resolver.lookup_ip(host).await {
            Ok(lookup) => lookup,
            Err(error) => {
                let reason = describe(&error);
                return Err(failed(match &self.inner.no_servers {
                    Some(why) => format!("{reason} ({why})"),
                    None => reason,
                }));
            }
        };
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(failed("the name has no address".to_owned()));
        }
        Ok(addrs)
    }
}

/// A name server given as `ip:port`, over UDP with TCP for truncated answers.
fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut connection| {
            connection.port = addr.port();
            connection
        })
        .collect();
    NameServerConfig::new(addr.ip(), true, connections)
}

/// A lookup failure in a few words.
fn describe(error: &NetError) -> String {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none))
            if none.response_code == ResponseCode::NXDomain =>
        {
            "no such name (NXDOMAIN)".to_owned()
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => "the name has no address".to_owned(),
        NetError::Timeout => "the name servers did not answer in time".to_owned(),
        NetError::NoConnections => "no name server could be reached".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::{Name, RecordType};

    use super::*;

    /// A name server nobody answers on: any query to it would time out.
    fn unreachable() -> Resolver {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        Resolver::new(Some(&[addr])).unwrap()
    }

    #[tokio::test]
    async fn ip_literals_bypass_resolution() {
        let resolver = unreachable();
        let v4 = resolver.resolve("10.1.2.3", 8080).await.unwrap();
        assert_eq!(v4, [SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 8080))]);
        let v6 = resolver.resolve("::1", 443).await.unwrap();
        assert_eq!(v6, [SocketAddr::from((Ipv6Addr::LOCALHOST, 443))]);
    }

    #[tokio::test]
    async fn localhost_never_goes_to_the_network() {
        let resolver = unreachable();
        let found = tokio::time::timeout(Duration::from_secs(1), resolver.resolve("localhost", 80))
            .await
            .expect("answered locally")
            .unwrap();
        assert!(!found.is_empty());
        assert!(
            found.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
            "{found:?}"
        );
    }

    #[test]
    fn lookup_failures_are_described() {
        let query = Query::query(Name::from_ascii("gone.test.").unwrap(), RecordType::A);
        let nx = NetError::from(DnsError::NoRecordsFound(NoRecords::new(
            query.clone(),
            ResponseCode::NXDomain,
        )));
        assert_eq!(describe(&nx), "no such name (NXDOMAIN)");
        let empty = NetError::from(DnsError::NoRecordsFound(NoRecords::new(
            query,
            ResponseCode::NoError,
        )));
        assert_eq!(describe(&empty), "the name has no address");
        assert_eq!(
            describe(&NetError::Timeout),
            "the name servers did not answer in time"
        );

        let error = UpstreamError::Resolve {
            host: "gone.test".into(),
            reason: describe(&nx),
        };
        assert_eq!(
            error.to_string(),
            "cannot resolve the backend host gone.test: no such name (NXDOMAIN)"
        );
    }

    /// A name server that answers NXDOMAIN to everything, on 127.0.0.1.
    async fn nxdomain_server() -> SocketAddr {
        use hickory_resolver::proto::op::Message;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0; 1500];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let query = Message::from_vec(&buf[..len]).unwrap();
                let mut answer = Message::error_msg(
                    query.metadata.id,
                    query.metadata.op_code,
                    ResponseCode::NXDomain,
                );
                answer.queries = query.queries;
                let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_unknown_name_is_a_resolve_error() {
        let resolver = Resolver::new(Some(&[nxdomain_server().await])).unwrap();
        let error = resolver.resolve("gone.strait.test", 80).await.unwrap_err();
        assert!(
            matches!(&error, UpstreamError::Resolve { host, .. } if host == "gone.strait.test"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "cannot resolve the backend host gone.strait.test: no such name (NXDOMAIN)"
        );
    }
}
