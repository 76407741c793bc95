//! The HTTP side of a relayed connection whose framing is followed: its tracker (held only
//! while a message is on its way), its place in the worker's wake list, and the requests it
//! has counted into its server's metrics.

use std::cell::RefCell;

use super::framing::{Direction, Tracker};
use super::idle::Registration;
use crate::metrics::ServerMetrics;

/// Trackers kept for reuse per thread; beyond that they are freed.
const POOL_LIMIT: usize = 256;

thread_local! {
    /// Trackers of connections between two messages, for the next message of any connection.
    /// Boxed in the pool too: a connection holds the box itself, so taking one allocates nothing.
    #[allow(clippy::vec_box)]
    static TRACKERS: RefCell<Vec<Box<Tracker>>> = const { RefCell::new(Vec::new()) };
}

fn take_tracker() -> Box<Tracker> {
    TRACKERS
        .with_borrow_mut(|p| p.pop())
        .unwrap_or_else(|| Box::new(Tracker::new()))
}

fn give_tracker(mut t: Box<Tracker>) {
    *t = Tracker::new();
    TRACKERS.with_borrow_mut(|p| {
        if p.len() < POOL_LIMIT {
            p.push(t);
        }
    });
}

/// The HTTP side of a followed connection: its tracker, its place in the worker's wake list,
/// and what has been counted of it so far.
pub(super) struct Followed {
    /// Held only while a message is on its way: given back to the worker's pool at every idle
    /// point (a fresh tracker and an idle one are the same state but for the request count),
    /// so that a pooled keep-alive connection waiting for its next request holds 8 bytes, not
    /// 272. Measured with benches/compare.py's idle load: 2.26 KiB per idle connection with the
    /// tracker inline, 1.88 before framing was followed.
    tracker: Option<Box<Tracker>>,
    /// Requests counted by the trackers given back.
    earlier: u64,
    pub(super) registration: Option<Registration>,
    requests: u64,
    in_flight: usize,
    fell_back: bool,
}

impl Followed {
    pub(super) fn new() -> Followed {
        Followed {
            tracker: None,
            earlier: 0,
            registration: None,
            requests: 0,
            in_flight: 0,
            fell_back: false,
        }
    }

    /// The tracker, taken from the pool when the connection's next message begins.
    pub(super) fn tracker(&mut self) -> &mut Tracker {
        self.tracker.get_or_insert_with(take_tracker)
    }

    /// Gives the tracker back while the connection is idle. One that saw `Connection: close`
    /// is kept: the close must still end the connection.
    pub(super) fn release_if_idle(&mut self) {
        if let Some(t) = self
            .tracker
            .take_if(|t| t.is_idle() && !t.close_requested())
        {
            self.earlier += t.requests();
            give_tracker(t);
        }
    }

    /// Requests whose heads have been seen on this connection.
    pub(super) fn requests_seen(&self) -> u64 {
        self.earlier + self.tracker.as_ref().map_or(0, |t| t.requests())
    }

    /// See [`Tracker::is_idle`]; true while no tracker is held.
    pub(super) fn is_idle(&self) -> bool {
        self.tracker.as_ref().is_none_or(|t| t.is_idle())
    }

    /// Every request has its complete response, and one of them said it was the connection's
    /// last (see [`Tracker::client_closes`]): the client sends nothing more.
    pub(super) fn last_exchange_done(&self) -> bool {
        self.tracker
            .as_ref()
            .is_some_and(|t| t.is_idle() && t.client_closes())
    }

    /// Brings the server's request counters up to date with what the tracker saw.
    pub(super) fn account(&mut self, m: &ServerMetrics) {
        let seen = self.requests_seen();
        let in_flight = self.tracker.as_ref().map_or(0, |t| t.in_flight());
        if seen != self.requests || in_flight != self.in_flight {
            m.requests.add(
                seen - self.requests,
                in_flight as i64 - self.in_flight as i64,
            );
            self.requests = seen;
            self.in_flight = in_flight;
        }
        if let Some(why) = self.tracker.as_ref().and_then(|t| t.fallback())
            && !self.fell_back
        {
            self.fell_back = true;
            m.byte_relays.inc();
            m.unfollowed(why.as_str());
            // what it was in flight is no longer known
            m.requests.add(0, -(self.in_flight as i64));
            self.in_flight = 0;
        }
    }

    /// Takes the connection out of the server's gauges when it ends.
    pub(super) fn finish(&mut self, m: &ServerMetrics) {
        m.requests.add(0, -(self.in_flight as i64));
        if self.fell_back {
            m.byte_relays.dec();
        }
        if let Some(t) = self.tracker.take() {
            give_tracker(t);
        }
    }
}

/// The followed side a pump shows its bytes to, with the pump's direction.
pub(super) fn tracker(
    f: &mut Option<Followed>,
    dir: Direction,
) -> Option<(&mut Followed, Direction)> {
    f.as_mut().map(|f| (f, dir))
}
