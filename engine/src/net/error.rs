//! Transport errors. All are *upstream* faults (the seller or the network), except
//! [`NetError::Overloaded`], which is our own limit refusing to send.

/// Why a request to a seller or the payment provider failed below the protocol level.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS handshake or configuration failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The peer closed the connection before answering.
    #[error("connection closed by the peer")]
    Closed,
    /// Our own per-seller concurrency limit is reached; nothing was sent.
    #[error("too many requests in flight to this seller")]
    Overloaded,
    /// The endpoint URL is not usable.
    #[error("bad endpoint: {0}")]
    BadEndpoint(String),
    /// The peer broke HTTP or the line protocol's framing.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl NetError {
    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, NetError::Timeout)
    }
}
