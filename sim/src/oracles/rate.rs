//! `rate-limit`: no user gets more messages accepted than its token bucket
//! allows. With capacity `C` refilled evenly over `W`, any window of length
//! `len` holds at most `C + floor(len·C/W)` accepted messages of one user,
//! judged by the server's own `timestamp`s. Buckets live in memory, so the
//! bound holds per server run.

use std::collections::BTreeMap;

use super::{Out, Place};

/// Accepted messages' timestamps per (server run, user).
#[derive(Debug, Default)]
pub struct Rate {
    accepted: BTreeMap<(usize, String), Vec<u64>>,
    capacity: u64,
    window_ms: u64,
}

impl Rate {
    /// Sets the bucket's shape.
    pub fn configure(&mut self, capacity: u64, window_ms: u64) {
        self.capacity = capacity.max(1);
        self.window_ms = window_ms.max(1);
    }

    /// A message of `user` accepted at `ts` (simulated ms) in server `run`.
    pub fn on_accepted(
        &mut self,
        out: &mut Out,
        at: u64,
        place: Place,
        run: usize,
        user: &str,
        ts: u64,
    ) {
        if self.window_ms == 0 {
            return;
        }
        let (c, w) = (self.capacity, self.window_ms);
        let times = self.accepted.entry((run, user.to_owned())).or_default();
        let i = times.partition_point(|&t| t <= ts);
        times.insert(i, ts);
        // Every window with the new message at one end.
        for &other in times.iter() {
            let (lo, hi) = if other <= ts {
                (other, ts)
            } else {
                (ts, other)
            };
            let start = times.partition_point(|&t| t < lo);
            let end = times.partition_point(|&t| t <= hi);
            let count = (end - start) as u64;
            let allowed = c + (hi - lo) * c / w;
            if count > allowed {
                out.fail(
                    "rate-limit",
                    at,
                    place,
                    format!(
                        "{user} had {count} messages accepted within {} ms ({lo}..={hi} ms), the bucket allows {allowed} (capacity {c} per {w} ms)",
                        hi - lo
                    ),
                );
                return;
            }
        }
    }
}

/// `request-rate`: no connection gets more requests through its bucket
/// (`RATE_LIMIT_REQUESTS` per `RATE_LIMIT_WINDOW_MS`) than it allows.
///
/// Replies carry no server time, so each accepted request is known by when
/// it was written and when its reply arrived: the server charged it in
/// between, and handled the connection's requests in order. Requests `k..=m`
/// were therefore charged within `replied(m) - written(k)`, and at most
/// `C + floor((replied(m) - written(k))·C/W)` of them can have passed. This
/// holds however long the network held them.
#[derive(Debug, Default)]
pub struct RequestRate {
    /// (written, replied) of each request that passed, per (run, connection).
    passed: BTreeMap<(usize, u64), Vec<(u64, u64)>>,
    capacity: u64,
    window_ms: u64,
}

impl RequestRate {
    /// A bucket of `capacity` refilled over `window_ms`.
    pub fn new(capacity: u64, window_ms: u64) -> RequestRate {
        RequestRate {
            passed: BTreeMap::new(),
            capacity: capacity.max(1),
            window_ms: window_ms.max(1),
        }
    }

    /// A request of `conn` written at `written` passed the bucket; its reply
    /// (or the next one, for a `TYPING_STATUS`) arrived at `at`.
    pub fn on_passed(
        &mut self,
        out: &mut Out,
        at: u64,
        place: Place,
        run: usize,
        conn: u64,
        written: u64,
    ) {
        let (c, w) = (self.capacity, self.window_ms);
        let list = self.passed.entry((run, conn)).or_default();
        list.push((written, at));
        let n = list.len();
        for (k, &(first_written, _)) in list.iter().enumerate() {
            let count = (n - k) as u64;
            let span = at.saturating_sub(first_written);
            let allowed = c + span * c / w;
            if count > allowed {
                out.fail(
                    "request-rate",
                    at,
                    place,
                    format!(
                        "{count} requests passed the connection's bucket between {first_written} ms (the first written) and {at} ms (the last answered); it allows {allowed} (capacity {c} per {w} ms)"
                    ),
                );
                list.clear();
                return;
            }
        }
    }
}
