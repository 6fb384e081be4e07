//! The lease a deployment runs under when another process may take it over
//! (the service's distributed mode): the deployment publishes intents only
//! while its lease is held by this process's clock, so a process that was
//! paused or cut off past its lease's life (another worker may run the
//! deployment by then) publishes nothing, even before it learns it lost it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// This process's clock origin for leases (monotonic: it goes on while the
/// process is stopped, so a paused process finds its lease expired).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn since_origin(at: Instant) -> u64 {
    at.saturating_duration_since(origin()).as_nanos() as u64
}

/// A lease held until a deadline; cheap to clone (the clones share it).
#[derive(Clone, Debug)]
pub struct Lease(Arc<AtomicU64>);

impl Lease {
    /// A lease held until `until`.
    pub fn until(until: Instant) -> Lease {
        let _ = origin();
        Lease(Arc::new(AtomicU64::new(since_origin(until))))
    }

    /// Held until `until` from now on (a renewal).
    pub fn extend(&self, until: Instant) {
        self.0.store(since_origin(until), Ordering::Release);
    }

    /// Whether it is held now.
    pub fn held(&self) -> bool {
        since_origin(Instant::now()) < self.0.load(Ordering::Acquire)
    }

    /// Lost for good: nothing is published any more.
    pub fn lose(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// How long it is held still (zero once lost or expired).
    pub fn remaining(&self) -> Duration {
        let deadline = self.0.load(Ordering::Acquire);
        Duration::from_nanos(deadline.saturating_sub(since_origin(Instant::now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_until_its_deadline_and_not_after() {
        let now = Instant::now();
        let lease = Lease::until(now + Duration::from_secs(60));
        assert!(lease.held());
        assert!(lease.remaining() > Duration::from_secs(59));
        let clone = lease.clone();
        clone.extend(now);
        assert!(!lease.held(), "clones share the lease");
        lease.extend(Instant::now() + Duration::from_secs(5));
        assert!(clone.held());
        lease.lose();
        assert!(!clone.held());
        assert_eq!(clone.remaining(), Duration::ZERO);
        assert!(!Lease::until(now).held(), "a lease ending now is not held");
    }
}
