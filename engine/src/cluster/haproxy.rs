//! `bookbroker haproxy-config`: a complete HAProxy 2.6 configuration for a config's
//! cluster (design section 7).
//!
//! - Quotes and everything else that is not a purchase go to backend `quotes`:
//!   `leastconn` over every node, health checks on `/readyz`, and a failed connection
//!   (or an empty answer, or a node shedding load with 503) retried on another node.
//! - `POST /v1/purchases` goes to backend `p<crc32(Idempotency-Key) mod N>`, and
//!   `GET /v1/purchases/p<P>-…` to backend `p<P>`: each has one server, the partition's
//!   owner, and no redispatch. While the owner is down the answer is `503` with
//!   `Retry-After`, never another node: a second node starting the same purchase could
//!   order a different offer.
//! - `/healthz`, `/readyz` and `/metrics` at the balancer are the balancer's own
//!   (HAProxy answers them; the engine's are per node and scraped on each node).
//! - An admin socket (`stats socket … level admin`) takes runtime commands such as
//!   `set server p1/node1 addr 10.0.0.9 port 8080` (the failover drill).

use std::fmt::Write as _;

use crate::cluster::Membership;
use crate::config::{parse_host_port, Config};

/// Where the admin socket goes unless `--admin-socket` says otherwise: the path Debian's
/// own HAProxy configuration uses.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/haproxy/admin.sock";

/// How long a client is told to wait (`Retry-After`, seconds) when a partition's owner
/// is down: about the time the health checks need to see a restarted node (`rise 2`
/// checks `downinter 500ms` apart).
pub const RETRY_AFTER_SECS: u32 = 1;

/// What `haproxy-config` is asked for beyond the engine config.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the balancer listens (`host:port`).
    pub listen: String,
    /// The runtime API's UNIX socket.
    pub admin_socket: String,
}

/// Why no configuration could be written.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// `--listen` is not `host:port`.
    #[error("--listen: {0}")]
    Listen(String),
    /// The admin socket path cannot be written into the configuration as it is.
    #[error("--admin-socket: {0:?} must be a path without spaces, quotes or '#'")]
    AdminSocket(String),
    /// No `[cluster]`, and `server.listen` is no address a balancer can reach.
    #[error(
        "the config has no [cluster] section and server.listen {0:?} is not an address the \
         balancer can connect to; add [cluster] nodes = [\"HOST:PORT\", …] and node = I"
    )]
    NoNodes(String),
}

/// The HAProxy configuration for `config`'s cluster.
pub fn render(config: &Config, opts: &Options) -> Result<String, HaproxyError> {
    parse_host_port(&opts.listen).map_err(HaproxyError::Listen)?;
    if opts.admin_socket.is_empty()
        || opts
            .admin_socket
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '#' | '\\'))
    {
        return Err(HaproxyError::AdminSocket(opts.admin_socket.clone()));
    }
    let membership = Membership::of(config);
    if !membership.is_declared() {
        // A cluster of one: its listen address, if a balancer can reach it.
        let reachable = config
            .server
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| !a.ip().is_unspecified());
        if !reachable {
            return Err(HaproxyError::NoNodes(config.server.listen.clone()));
        }
    }
    let nodes = membership.nodes();
    let n = nodes.len();
    // The balancer must wait for a purchase as long as the engine does, plus margin.
    let server_timeout_ms = config.purchases.wait_ms + 5_000;
    let mut out = String::new();
    let w = &mut out;
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        w,
        "# HAProxy 2.6 configuration for a bookbroker cluster of {n} node(s), written by\n\
         # `bookbroker haproxy-config`. Regenerate it when [cluster] changes; do not edit.\n\
         #\n\
         # Purchases: partition = crc32(Idempotency-Key) mod {n}, node i owns partition i.\n\
         # A purchase only ever goes to its partition's owner; while the owner is down the\n\
         # answer is 503 + Retry-After. Quotes: leastconn over every healthy node.\n\
         #\n\
         # Runtime API (failover drill: the dead node's data directory started elsewhere):\n\
         #   echo 'set server p1/node1 addr NEW_IP port NEW_PORT' | socat stdio {sock}\n\
         #   echo 'set server quotes/node1 addr NEW_IP port NEW_PORT' | socat stdio {sock}\n\
         \n\
         global\n    \
             log stderr format short local0 notice\n    \
             stats socket {sock} mode 600 level admin\n    \
             stats timeout 30s\n\
         \n\
         defaults\n    \
             mode http\n    \
             log global\n    \
             option dontlognull\n    \
             timeout connect 2s\n    \
             timeout client 30s\n    \
             timeout http-request 10s\n    \
             timeout http-keep-alive 30s\n    \
             timeout queue 2s\n    \
             # purchases.wait_ms ({wait} ms) plus margin: a purchase answers by then.\n    \
             timeout server {server_timeout_ms}ms\n    \
             # A node that refuses a connection is down at once; checks bring it back.\n    \
             default-server inter 1s fastinter 250ms downinter 500ms rise 2 fall 2 observe layer4 error-limit 1 on-error mark-down\n    \
             # Errors the balancer itself answers, as the engine does: problem+json.\n    \
             http-error status 502 content-type application/problem+json hdr Retry-After {RETRY_AFTER_SECS} string '{e502}'\n    \
             http-error status 503 content-type application/problem+json hdr Retry-After {RETRY_AFTER_SECS} string '{e503}'\n    \
             http-error status 504 content-type application/problem+json hdr Retry-After {RETRY_AFTER_SECS} string '{e504}'\n",
        sock = opts.admin_socket,
        wait = config.purchases.wait_ms,
        e502 = problem(
            502,
            "bad-gateway",
            "Bad gateway",
            "the engine node closed the connection before answering (it may have just \
             stopped); a purchase may have started: retry with the same Idempotency-Key"
        ),
        e503 = problem(
            503,
            "unavailable",
            "Service unavailable",
            "no engine node can take this request now; retry with the same Idempotency-Key"
        ),
        e504 = problem(
            504,
            "gateway-timeout",
            "Gateway timeout",
            "the engine node did not answer in time; retry with the same Idempotency-Key"
        ),
    );
    let _ = writeln!(
        w,
        "frontend bookbroker\n    \
             bind {listen}\n    \
             # The balancer's own routes, answered here: a node's /healthz, /readyz and\n    \
             # /metrics describe that node only (scrape them on each node).\n    \
             http-request return status 200 content-type \"text/plain; charset=utf-8\" lf-string \"ok\" if {{ path /healthz }}\n    \
             http-request return status 200 content-type \"text/plain; charset=utf-8\" lf-string \"ready\" if {{ path /readyz }} {{ nbsrv(quotes) gt 0 }}\n    \
             http-request return status 503 content-type \"text/plain; charset=utf-8\" lf-string \"no engine node is up\" if {{ path /readyz }}\n    \
             http-request use-service prometheus-exporter if {{ path /metrics }}\n    \
             acl purchase_new path /v1/purchases\n    \
             acl has_key req.fhdr_cnt(Idempotency-Key) gt 0\n    \
             acl purchase_named path_reg ^/v1/purchases/p[0-9]+-\n    \
             acl purchase_id path_beg /v1/purchases/\n    \
             # The engine reads the first Idempotency-Key header, whole (commas included).\n    \
             use_backend p%[req.fhdr(Idempotency-Key,1),crc32,mod({n})] if METH_POST purchase_new has_key\n    \
             use_backend p%[path,field(4,/),field(1,-),regsub(^p,)] if purchase_named\n    \
             # Ids without a partition prefix (a cluster of one issues them) are partition 0's.\n    \
             use_backend p0 if purchase_id\n    \
             default_backend quotes\n",
        listen = opts.listen,
    );
    let check = "    option httpchk\n    \
                 http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host bookbroker\n    \
                 http-check expect status 200\n";
    let _ = writeln!(
        w,
        "backend quotes\n    \
             balance leastconn\n{check}    \
             # Stateless: a failed connection, an empty answer or a node shedding load (503)\n    \
             # is retried on another node.\n    \
             option redispatch 1\n    \
             retries 2\n    \
             retry-on conn-failure empty-response 503"
    );
    for (i, node) in nodes.iter().enumerate() {
        let _ = writeln!(w, "    server node{i} {} check", server_address(node));
    }
    let _ = writeln!(w);
    for (i, node) in nodes.iter().enumerate() {
        let down = problem(
            503,
            "partition-unavailable",
            "Partition unavailable",
            &format!(
                "node {i} ({node}), the only node that may run purchases of partition {i}, is \
                 down; retry with the same Idempotency-Key"
            ),
        );
        let _ = writeln!(
            w,
            "backend p{i}\n    \
                 # Partition {i}: its owner only. No redispatch, no retry on another node:\n    \
                 # a second node starting the same purchase could order a different offer.\n{check}    \
                 retries 0\n    \
                 http-request return status 503 content-type application/problem+json hdr Retry-After {RETRY_AFTER_SECS} string '{down}' if {{ nbsrv(p{i}) eq 0 }}\n    \
                 server node{i} {} check\n",
            server_address(node)
        );
    }
    Ok(out)
}

/// A node address as HAProxy's `server` line takes it: IPv6 literals as `ipv6@ADDR:PORT`
/// (HAProxy reads the last colon as the port separator and takes no brackets).
fn server_address(node: &str) -> String {
    match parse_host_port(node) {
        Ok(hp) if hp.host.contains(':') => format!("ipv6@{}:{}", hp.host, hp.port),
        _ => node.to_string(),
    }
}

/// A problem+json body for HAProxy's single-quoted `string` argument: none of the texts
/// here holds a single quote or a backslash, and JSON escapes nothing else HAProxy minds.
fn problem(status: u16, kind: &str, title: &str, detail: &str) -> String {
    // Members in the engine's order (type, title, status, detail).
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: String,
        title: &'a str,
        status: u16,
        detail: &'a str,
    }
    serde_json::to_string(&Body {
        kind: format!("/problems/{kind}"),
        title,
        status,
        detail,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    fn opts() -> Options {
        Options {
            listen: "127.0.0.1:8080".into(),
            admin_socket: "/tmp/admin.sock".into(),
        }
    }

    fn cluster(nodes: &[&str]) -> Config {
        let mut c = Config::from_toml_str("").unwrap();
        c.cluster = Some(ClusterConfig {
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            node: 0,
        });
        c
    }

    #[test]
    fn every_partition_has_its_owner_only() {
        let text = render(
            &cluster(&["127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"]),
            &opts(),
        )
        .unwrap();
        assert!(text.contains("crc32,mod(3)"), "{text}");
        assert!(text.contains("bind 127.0.0.1:8080"));
        assert!(text.contains("stats socket /tmp/admin.sock mode 600 level admin"));
        for (i, node) in ["127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"]
            .iter()
            .enumerate()
        {
            let backend = text
                .split(&format!("backend p{i}\n"))
                .nth(1)
                .unwrap()
                .split("\n\n")
                .next()
                .unwrap();
            let servers: Vec<&str> = backend
                .lines()
                .filter(|l| l.trim_start().starts_with("server "))
                .collect();
            assert_eq!(
                servers,
                vec![format!("    server node{i} {node} check")],
                "{backend}"
            );
            assert!(!backend.contains("option redispatch"), "{backend}");
            assert!(backend.contains("hdr Retry-After 1"), "{backend}");
        }
        let quotes = text
            .split("\nbackend quotes\n")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        assert_eq!(quotes.matches("    server node").count(), 3, "{quotes}");
        assert!(quotes.contains("option redispatch"));
        assert!(quotes.contains("balance leastconn"));
        assert!(quotes.contains("uri /readyz"));
        // purchases.wait_ms 10 s + 5 s.
        assert!(text.contains("timeout server 15000ms"));
    }

    #[test]
    fn a_cluster_of_one_needs_a_reachable_address() {
        let mut c = Config::from_toml_str("").unwrap();
        assert!(matches!(render(&c, &opts()), Err(HaproxyError::NoNodes(_))));
        c.server.listen = "127.0.0.1:9000".into();
        let text = render(&c, &opts()).unwrap();
        assert!(text.contains("mod(1)") && text.contains("server node0 127.0.0.1:9000 check"));
    }

    #[test]
    fn bad_options_are_refused() {
        let c = cluster(&["a:1"]);
        let mut o = opts();
        o.listen = "nowhere".into();
        assert!(matches!(render(&c, &o), Err(HaproxyError::Listen(_))));
        let mut o = opts();
        o.admin_socket = "/tmp/a b.sock".into();
        assert!(matches!(render(&c, &o), Err(HaproxyError::AdminSocket(_))));
    }

    #[test]
    fn ipv6_nodes_are_spelled_for_haproxy() {
        assert_eq!(server_address("[::1]:8080"), "ipv6@::1:8080");
        assert_eq!(server_address("10.0.0.1:8080"), "10.0.0.1:8080");
    }
}
