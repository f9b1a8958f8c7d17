//! Seller endpoint URLs.

use std::net::{SocketAddr, ToSocketAddrs};

use super::NetError;
use crate::config::parse_url;

/// How an endpoint is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// The line protocol over TCP.
    Tcp,
}

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://host:port`, `https://host:port` or `tcp://host:port`.
    pub fn parse(url: &str) -> Result<Endpoint, NetError> {
        let (scheme, hp) = parse_url(url).map_err(NetError::BadEndpoint)?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "tcp" => Scheme::Tcp,
            other => {
                return Err(NetError::BadEndpoint(format!(
                    "{url:?}: scheme {other:?} is not http, https or tcp"
                )))
            }
        };
        Ok(Endpoint {
            scheme,
            host: hp.host,
            port: hp.port,
        })
    }

    /// Resolves the address. Done once when a pool is built, never on the request path:
    /// name resolution blocks the thread.
    pub fn resolve(&self) -> Result<SocketAddr, NetError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| NetError::BadEndpoint(format!("{}: {e}", self)))?
            .next()
            .ok_or_else(|| NetError::BadEndpoint(format!("{self}: no address")))
    }

    /// `host:port` as the HTTP `Host` header wants it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}
