//! Retrying storage calls that failed for a reason that may pass (a lock held by another
//! process, a full disk, a failed commit), with capped exponential backoff.

use std::future::Future;
use std::time::Duration;

use crate::storage::StorageError;

/// Retries a storage call while it fails for a reason that may pass (a lock held by another
/// process, a full disk, a failed commit): up to 8 retries over about 7 seconds.
pub(crate) async fn with_retries<T, F, Fut>(what: &str, attempt: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    retrying(what, true, attempt).await
}

/// `with_retries` for a caller that waits out an unavailable database (full, locked) itself
/// without blocking its actor: such a failure is returned at once.
pub(crate) async fn with_retries_until_unavailable<T, F, Fut>(
    what: &str,
    attempt: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    retrying(what, false, attempt).await
}

async fn retrying<T, F, Fut>(
    what: &str,
    retry_unavailable: bool,
    mut attempt: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        match attempt().await {
            Err(error)
                if !error.is_permanent() && (retry_unavailable || !error.is_unavailable()) =>
            {
                log::warn!(
                    "storage call failed, retrying in {}ms what={what}: {error:#}",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
    attempt().await
}
