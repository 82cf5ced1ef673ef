//! Environments: listeners, TLS, timeouts, access logs, grace periods, backend source
//! addresses, and the admin listener; names and listen addresses must not clash.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::config::tree::{Loc, Node};
use crate::config::{
    AccessLogFormat, AccessLogSettings, AdminConfig, BackendTls, Environment, Timeouts, TlsFiles,
    parse_duration,
};

use super::{
    ACCESS_LOG_KEYS, ADMIN_KEYS, BACKEND_TLS_KEYS, Check, ENVIRONMENT_KEYS, TIMEOUT_KEYS, TLS_KEYS,
    join,
};

const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

const DEFAULT_UNDEPLOY_GRACE: Duration = Duration::from_secs(30);

pub(super) struct EnvironmentDraft {
    label: String,
    /// `environments[i]`.
    field: String,
    pub(super) name: Option<(String, Loc)>,
    listen: Option<(SocketAddr, Loc)>,
    pub(super) environment: Option<Environment>,
}

impl Check<'_> {
    pub(super) fn environment(&mut self, index: usize, node: &Node) -> EnvironmentDraft {
        let numbered = format!("environment #{}", index + 1);
        let field = format!("environments[{index}]");
        let expected = "a mapping with name, listen and optional settings";
        let Some(fields) = self.mapping(node, &numbered, expected, &field) else {
            return EnvironmentDraft {
                label: numbered,
                field,
                name: None,
                listen: None,
                environment: None,
            };
        };
        let (ctx, name) = self.name(&fields, "environment", numbered, "production");
        self.known_keys(&fields, Some(&ctx), None, ENVIRONMENT_KEYS);

        let listen = self.required(&fields, &ctx, "listen", "127.0.0.1:8080");
        let listen = listen.and_then(|n| {
            let addr = self.listen(n, &ctx, &fields.field("listen"))?;
            Some((addr, n.at))
        });
        let websocket = self.flag(&fields, &ctx, "websocket");
        let tls = match fields.optional("tls") {
            None => Some(None),
            Some(node) => self.tls(node, &ctx, &fields.field("tls")).map(Some),
        };
        let timeouts = match fields.optional("timeouts") {
            None => Some(Timeouts::default()),
            Some(node) => self.timeouts(node, &ctx, &fields.field("timeouts")),
        };
        let shutdown_grace = match fields.optional("shutdown_grace") {
            None => Some(DEFAULT_SHUTDOWN_GRACE),
            Some(node) => self.duration(
                node,
                &ctx,
                "shutdown_grace",
                &fields.field("shutdown_grace"),
            ),
        };
        let undeploy_grace = match fields.optional("undeploy_grace") {
            None => Some(Some(DEFAULT_UNDEPLOY_GRACE)),
            Some(node) => self.undeploy_grace(node, &ctx, &fields.field("undeploy_grace")),
        };

        let access_log = match fields.optional("access_log") {
            None => Some(AccessLogSettings::default()),
            Some(node) => self.access_log(node, &ctx, &fields.field("access_log")),
        };
        let policies = self.policies(&fields, &ctx);
        let sources = match fields.optional("backend_source_addresses") {
            None => Some(Vec::new()),
            Some(node) => {
                self.source_addresses(node, &ctx, &fields.field("backend_source_addresses"))
            }
        };

        let environment = (|| {
            Some(Environment {
                name: name.clone()?.0,
                listen: listen?.0,
                websocket: websocket?,
                tls: tls?,
                timeouts: timeouts?,
                shutdown_grace: shutdown_grace?,
                undeploy_grace: undeploy_grace?,
                access_log: access_log?,
                policies: policies?,
                backend_source_addresses: sources?,
            })
        })();
        EnvironmentDraft {
            label: ctx,
            field,
            name,
            listen,
            environment,
        }
    }

    fn listen(&mut self, node: &Node, ctx: &str, field: &str) -> Option<SocketAddr> {
        let text = self.scalar_text(
            node,
            ctx,
            "listen",
            "an address such as 127.0.0.1:8080",
            field,
        )?;
        let parsed = text.parse().ok().or_else(|| {
            let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        });
        if parsed.is_none() {
            let message = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                format!(
                    "{ctx}: listen {text:?} has no host; write 127.0.0.1:{text} to accept connections from this machine only, or 0.0.0.0:{text} for every interface"
                )
            } else {
                format!(
                    "{ctx}: listen {text:?} is not an address; write IP:port, such as 127.0.0.1:8080, localhost:8080, 0.0.0.0:8080 or [::1]:8080"
                )
            };
            self.report(node.at, field, message);
        }
        parsed
    }

    /// `backend_source_addresses`: IP addresses (no port: each connection gets its own),
    /// each listed once.
    fn source_addresses(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Vec<IpAddr>> {
        let key = "backend_source_addresses";
        let expected = "a list of this machine's IP addresses, such as [127.0.0.2, 127.0.0.3]";
        let items = self.list(node, &format!("{ctx}: {key}"), expected, field)?;
        let mut addresses: Vec<IpAddr> = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{index}]");
            let label = format!("each entry of {key}");
            let Some(text) = self.scalar_text(
                item,
                ctx,
                &label,
                "an IP address such as 127.0.0.2",
                &item_field,
            ) else {
                complete = false;
                continue;
            };
            let problem = match text.parse::<IpAddr>() {
                Err(_) => Some(format!(
                    "{ctx}: {key} entry {text:?} is not an IP address; write the address alone, such as 127.0.0.2 or ::1 (the port is chosen per connection)"
                )),
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => Some(format!(
                    "{ctx}: {key} entry {text:?} is not an address a connection can leave from; list addresses of this machine's interfaces"
                )),
                Ok(ip) if addresses.contains(&ip) => {
                    Some(format!("{ctx}: {key} lists {text:?} twice"))
                }
                Ok(ip) => {
                    addresses.push(ip);
                    None
                }
            };
            if let Some(message) = problem {
                self.report(item.at, &item_field, message);
                complete = false;
            }
        }
        complete.then_some(addresses)
    }

    /// The optional `admin` section: the admin API's own listener.
    pub(super) fn admin(
        &mut self,
        node: &Node,
        environments: &[EnvironmentDraft],
    ) -> Option<AdminConfig> {
        let ctx = "admin";
        let expected = "a mapping such as { listen: 127.0.0.1:8001 }";
        let fields = self.mapping(node, ctx, expected, "admin")?;
        self.known_keys(&fields, Some(ctx), None, ADMIN_KEYS);
        let node = self.required(&fields, ctx, "listen", "127.0.0.1:8001")?;
        let field = fields.field("listen");
        let listen = self.listen(node, ctx, &field)?;
        let clash = environments.iter().find_map(|env| {
            let (env_addr, _) = env.listen?;
            listeners_clash(listen, env_addr).then_some((env, env_addr))
        });
        if let Some((env, env_addr)) = clash {
            let message = format!(
                "admin: listen {listen} clashes with {} (listen {env_addr}); the admin API needs an address of its own",
                env.label
            );
            self.report(node.at, &field, message);
            return None;
        }
        Some(AdminConfig { listen })
    }

    fn tls(&mut self, node: &Node, ctx: &str, field: &str) -> Option<TlsFiles> {
        let fields = self.section(
            node,
            ctx,
            "tls",
            TLS_KEYS,
            "a mapping such as { cert: gw.pem, key: gw-key.pem }",
            field,
        )?;
        let cert = self.file(&fields, ctx, "cert", "gw.pem");
        let key = self.file(&fields, ctx, "key", "gw-key.pem");
        Some(TlsFiles {
            cert: cert?,
            key: key?,
        })
    }

    fn access_log(&mut self, node: &Node, ctx: &str, field: &str) -> Option<AccessLogSettings> {
        let expected = "a mapping such as { format: json, file: access.log, log_handshake: false }";
        let fields = self.section(node, ctx, "access_log", ACCESS_LOG_KEYS, expected, field)?;
        let format = self.choice(
            &fields,
            ctx,
            "format",
            &[
                ("json", Some(AccessLogFormat::Json)),
                ("combined", Some(AccessLogFormat::Combined)),
                ("off", None),
            ],
            Some(AccessLogFormat::Json),
        );
        let file = match fields.optional("file") {
            None => Some(None),
            Some(_) => self.file(&fields, ctx, "file", "access.log").map(Some),
        };
        let log_handshake = self.flag(&fields, ctx, "log_handshake");
        Some(AccessLogSettings {
            format: format?,
            file: file?,
            log_handshake: log_handshake?,
        })
    }

    pub(super) fn backend_tls(
        &mut self,
        node: &Node,
        ctx: &str,
        field: &str,
    ) -> Option<BackendTls> {
        let expected = "a mapping such as { ca_file: ca.pem }";
        let fields = self.section(node, ctx, "backend_tls", BACKEND_TLS_KEYS, expected, field)?;
        let ca_file = self.file(&fields, ctx, "ca_file", "ca.pem")?;
        Some(BackendTls { ca_file })
    }

    fn timeouts(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Timeouts> {
        let fields = self.section(
            node,
            ctx,
            "timeouts",
            TIMEOUT_KEYS,
            "a mapping such as { connect: 5s, response: 60s, websocket_idle: 1h }",
            field,
        )?;
        let defaults = Timeouts::default();
        let mut timeout = |key: &str, default: Duration| match fields.optional(key) {
            None => Some(default),
            Some(node) => self.duration(node, ctx, &fields.label(key), &fields.field(key)),
        };
        let connect = timeout("connect", defaults.connect);
        let response = timeout("response", defaults.response);
        let websocket_idle = timeout("websocket_idle", defaults.websocket_idle);
        // These may be left out (`Some(None)`: off, or the default) but not zero: a zero
        // interval would ping without end, a zero `send` cut every connection that waits to
        // write, a zero `client_idle` every connection before its first request. `None`: reported.
        let mut positive = |key: &str| {
            let Some(node) = fields.optional(key) else {
                return Some(None);
            };
            let label = fields.label(key);
            let d = self.duration(node, ctx, &label, &fields.field(key))?;
            if d.is_zero() {
                let why =
                    format!("{ctx}: {label}: must be more than 0s; leave it out for its default");
                self.report(node.at, &fields.field(key), why);
                return None;
            }
            Some(Some(d))
        };
        let send = positive("send");
        let client_idle = positive("client_idle");
        let websocket_ping = positive("websocket_ping");
        let websocket_pong_timeout = positive("websocket_pong_timeout");
        let websocket_max_lifetime = positive("websocket_max_lifetime");
        Some(Timeouts {
            connect: connect?,
            response: response?,
            send: send?.unwrap_or(defaults.send),
            client_idle: client_idle?.unwrap_or(defaults.client_idle),
            websocket_idle: websocket_idle?,
            websocket_ping: websocket_ping?,
            websocket_pong_timeout: websocket_pong_timeout?
                .unwrap_or(defaults.websocket_pong_timeout),
            websocket_max_lifetime: websocket_max_lifetime?,
        })
    }

    /// A duration, `0` (close at once) or `never` (`None`: let sessions finish on their own).
    fn undeploy_grace(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Option<Duration>> {
        let label = "undeploy_grace";
        let expected = "a duration such as 30s, 0 or never";
        let text = self.scalar_text(node, ctx, label, expected, field)?;
        match text.as_str() {
            "never" => return Some(None),
            "0" => return Some(Some(Duration::ZERO)),
            _ => {}
        }
        match parse_duration(&text) {
            Ok(grace) => Some(Some(grace)),
            Err(why) => {
                let message = format!(
                    "{ctx}: {label}: {why}; or write 0 to close the sessions at once, or never to let them finish on their own"
                );
                self.report(node.at, field, message);
                None
            }
        }
    }

    pub(super) fn check_environments(&mut self, environments: &[EnvironmentDraft]) {
        self.unique_names(
            "environment",
            environments.iter().map(|e| (&e.name, e.field.as_str())),
        );
        for (i, env) in environments.iter().enumerate() {
            let Some((addr, at)) = env.listen else {
                continue;
            };
            let clash = environments.iter().take(i).find_map(|other| {
                let (other_addr, _) = other.listen?;
                listeners_clash(addr, other_addr).then_some((other, other_addr))
            });
            if let Some((other, other_addr)) = clash {
                let message = format!(
                    "{}: listen {addr} clashes with {} (listen {other_addr}); HTTP and WebSocket share one listener, so each environment needs its own address",
                    env.label, other.label
                );
                self.report(at, &join(&env.field, "listen"), message);
            }
        }
    }
}

/// Whether two listeners would fight over the same socket. Port 0 asks the system for a free
/// port, so it never clashes.
fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (a, b) = (a.ip(), b.ip());
    let same_family = a.is_ipv4() == b.is_ipv4();
    a == b
        || (a.is_unspecified() && b.is_unspecified())
        || ((a.is_unspecified() || b.is_unspecified()) && same_family)
}
