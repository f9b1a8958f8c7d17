//! Errors shared by the codecs.

/// Why an answer from a seller or the payment provider could not be turned into a typed
/// value. Every variant is an *upstream* fault: the peer said something unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The peer is overloaded (HTTP 429/503, `BUSY`); it may be retried after the delay.
    #[error("upstream busy (retry after {retry_after_ms:?} ms)")]
    Busy {
        /// How long the peer asked us to wait, when it said.
        retry_after_ms: Option<u64>,
    },
    /// The peer answered with an HTTP status that the operation does not expect.
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// The peer reported an error of its own (`ERR` in the line protocol, an `error`
    /// field in JSON, an unknown `status` in XML).
    #[error("upstream error {code}: {message}")]
    Remote {
        /// The peer's error code.
        code: String,
        /// The peer's message.
        message: String,
    },
    /// The bytes do not form a valid answer.
    #[error("malformed upstream answer: {0}")]
    Malformed(String),
    /// The peer is still working on an earlier request with the same idempotency key
    /// (`409 idempotency_key_in_use`, `<status>inProgress</status>`). The outcome of that
    /// request is unknown, not refused: ask again later with the same key.
    #[error(
        "upstream is still working on this idempotency key (retry after {retry_after_ms:?} ms)"
    )]
    InProgress {
        /// How long the peer asked us to wait, when it said.
        retry_after_ms: Option<u64>,
    },
    /// The peer says it placed order `order_id` but the total it confirmed cannot be read
    /// (unparseable, unknown currency). The order exists: it must be undone, and the
    /// total must never be taken as a price.
    #[error("order {order_id} confirmed with an unreadable total: {reason}")]
    Unconfirmed {
        /// The seller's order id.
        order_id: String,
        /// What is wrong with the total.
        reason: String,
    },
}

impl DecodeError {
    /// Whether repeating the same request later might succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DecodeError::Busy { .. } | DecodeError::InProgress { .. } => true,
            DecodeError::Status(s) => *s >= 500,
            DecodeError::Remote { .. }
            | DecodeError::Malformed(_)
            | DecodeError::Unconfirmed { .. } => false,
        }
    }
}

/// Why a *request* (seen by a server: `sellersim` or the payment simulator) is invalid.
/// Every variant is a *downstream* fault: the client sent something unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A required field or parameter is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A field or parameter has an invalid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body does not parse at all.
    #[error("malformed request: {0}")]
    Malformed(String),
}
