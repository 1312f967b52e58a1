//! Live flows per backend, counted by one paced walk of conntrack that also removes the flows
//! idle too long (LRU alone never forgets a flow that ended, so without this a drained
//! backend would never look empty).
//!
//! The walk runs on its own handle of the map and holds no lock anyone else waits for: the
//! scrape and `sluice backends` read its last result. It is paced to a budget of about 0.5 %
//! of a core, half the idle daemon's allowance (a walk that took `t` is followed by a pause of
//! `t × 199`, at least [`MIN_PAUSE`]). While walks are cheap (a small table), a reader gets a
//! fresh walk instead, so counts are exact right after a change.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use lb_common::{FlowEntry, FlowKey, ProxyFlow, FLOW_FLAG_PROXY};

use crate::dataplane::{now_ns, Conntrack, DataplaneError};

/// The shortest pause between two background walks.
pub const MIN_PAUSE: Duration = Duration::from_secs(1);
/// Pause per unit of walk time: 199 makes walking at most 0.5 % of the time.
const PAUSE_FACTOR: u32 = 199;
/// A reader walks afresh when the last walk took at most this long.
const CHEAP_WALK: Duration = Duration::from_millis(5);

/// Where the entries come from: conntrack, or a stand-in in tests.
pub trait FlowSource: Send + Sync + 'static {
    /// Calls `f` with every entry; returns how many it saw.
    fn for_each(&self, f: &mut dyn FnMut(&FlowKey, &FlowEntry)) -> Result<usize, DataplaneError>;
    /// The PROXY record (real client) of a flow flagged `FLOW_FLAG_PROXY`, if it is there.
    fn proxy_flow(&self, k: &FlowKey, e: &FlowEntry) -> Option<ProxyFlow>;
    /// Removes `keys` (those already gone are skipped) and the PROXY records of `proxy_keys`;
    /// returns how many flows it removed.
    fn remove(&self, keys: &[FlowKey], proxy_keys: &[FlowKey]) -> Result<usize, DataplaneError>;
}

impl FlowSource for Conntrack {
    fn for_each(&self, f: &mut dyn FnMut(&FlowKey, &FlowEntry)) -> Result<usize, DataplaneError> {
        Conntrack::for_each(self, f)
    }

    fn proxy_flow(&self, k: &FlowKey, e: &FlowEntry) -> Option<ProxyFlow> {
        Conntrack::proxy_flow(self, k, e)
    }

    fn remove(&self, keys: &[FlowKey], proxy_keys: &[FlowKey]) -> Result<usize, DataplaneError> {
        Conntrack::remove(self, keys, proxy_keys)
    }
}

/// What one walk found.
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// Live (not expired) entries per backend id.
    pub per_backend: HashMap<u32, u64>,
    /// Live entries in all.
    pub entries: u64,
    /// Entries this walk removed as idle.
    pub expired: usize,
    /// How long the walk took.
    pub took: Duration,
    /// When it ended; `None` before the first walk.
    pub at: Option<Instant>,
}

pub struct FlowCensus {
    source: Box<dyn FlowSource>,
    idle_timeout: Duration,
    /// One walk at a time; readers never take it (they read `last`).
    walking: Mutex<()>,
    /// Held only to clone or replace the `Arc`.
    last: Mutex<Arc<Census>>,
}

impl FlowCensus {
    pub fn new(source: Box<dyn FlowSource>, idle_timeout: Duration) -> FlowCensus {
        FlowCensus {
            source,
            idle_timeout,
            walking: Mutex::new(()),
            last: Mutex::new(Arc::new(Census::default())),
        }
    }

    /// The entries themselves, for `sluice flows`: a walk of its own, off every lock.
    pub fn source(&self) -> &dyn FlowSource {
        &*self.source
    }

    /// The last walk's result, without walking.
    pub fn latest(&self) -> Arc<Census> {
        Arc::clone(&self.last.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Counts for a reader: a fresh walk while walks are cheap, the last result otherwise
    /// (a reader then never waits for a walk of a large table).
    pub fn current(&self) -> Result<Arc<Census>, DataplaneError> {
        let last = self.latest();
        if last.at.is_some() && last.took > CHEAP_WALK {
            return Ok(last);
        }
        self.walk()
    }

    /// Walks the table once: counts the live entries per backend, removes the idle ones, and
    /// publishes the result.
    pub fn walk(&self) -> Result<Arc<Census>, DataplaneError> {
        let _one = self.walking.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let now = now_ns();
        let limit = u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        let mut census = Census::default();
        let mut stale = Vec::new();
        let mut stale_proxy = Vec::new();
        self.source.for_each(&mut |k, e| {
            // `last_seen_ns` is from the kernel's coarse clock, at most a tick behind `now`:
            // an idle time comes out that much longer, which a timeout in minutes ignores.
            if now.saturating_sub(e.last_seen_ns) > limit {
                stale.push(*k);
                if e.flags & FLOW_FLAG_PROXY != 0 {
                    stale_proxy.push(*k);
                }
            } else {
                *census.per_backend.entry(e.backend).or_insert(0) += 1;
                census.entries += 1;
            }
        })?;
        if !stale.is_empty() {
            census.expired = self.source.remove(&stale, &stale_proxy)?;
            tracing::debug!(
                expired = census.expired,
                "idle flows removed from conntrack"
            );
        }
        census.took = started.elapsed();
        census.at = Some(Instant::now());
        let census = Arc::new(census);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&census);
        Ok(census)
    }

    /// How long to wait after a walk that took `took`: the 0.5 % budget.
    pub fn pause_after(took: Duration) -> Duration {
        (took * PAUSE_FACTOR).max(MIN_PAUSE)
    }
}
