//! What can go wrong talking to Redis: never a [`Reply`](crate::store::Reply).

use std::time::Duration;

/// A store call that has no [`Reply`](crate::store::Reply): Redis did not
/// answer in time, the connection is down, a script failed, or the answer
/// was not what the scripts return. The operation may or may not have taken
/// effect (a timeout or a lost connection after the request was written):
/// a `Publish` is retried with its `clientMessageId`, and stored at most
/// once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within `REDIS_TIMEOUT_MS`.
    #[error("redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection failed, or Redis answered with an error (a script
    /// error included).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered something the scripts never return (data not written
    /// by this store, or a bug): the call is failed, never a panic.
    #[error("unexpected data from redis: {0}")]
    Decode(String),
    /// An argument a script could not hold exactly (Lua numbers are doubles:
    /// integers stay below 2^53).
    #[error("out of range for the redis store: {0}")]
    OutOfRange(String),
    /// The subscriber's task is gone.
    #[error("the redis subscriber stopped")]
    SubscriberGone,
}

/// `call`'s answer, or [`StoreError::Timeout`] when none came within
/// `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

impl StoreError {
    /// Whether Redis did not answer the call: it timed out, the connection
    /// is down or was refused, or Redis cannot serve yet (loading its data
    /// after a restart, a replica cut from its primary, busy running a
    /// script). Such a call is worth trying again later; any other error
    /// (a script's, unreadable data) would fail again.
    pub fn is_unanswered(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        match self {
            StoreError::Timeout(_) | StoreError::SubscriberGone => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.kind(),
                        ErrorKind::Server(
                            ServerErrorKind::BusyLoading
                                | ServerErrorKind::TryAgain
                                | ServerErrorKind::MasterDown
                                | ServerErrorKind::ReadOnly
                        )
                    )
                    || e.code() == Some("BUSY")
            }
            StoreError::Decode(_) | StoreError::OutOfRange(_) => false,
        }
    }

    /// A decoding failure.
    pub(crate) fn decode(what: impl Into<String>) -> StoreError {
        StoreError::Decode(what.into())
    }
}
