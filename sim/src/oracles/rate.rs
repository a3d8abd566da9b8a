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
    /// `RATE_LIMIT_EXCEEDED` of a user's send: (arrived, written +
    /// retryAfterMs) per (server run, user).
    refusals: BTreeMap<(usize, String), Vec<(u64, u64)>>,
    capacity: u64,
    window_ms: u64,
}

/// The longest wait a bucket of `capacity` refilled over `window_ms` can
/// name: one token's worth of refill, `ceil(W / C)`.
pub fn longest_wait(capacity: u64, window_ms: u64) -> u64 {
    window_ms.div_ceil(capacity.max(1))
}

/// What a refusal's `retryAfterMs` must be for any bucket: at least 1 (a
/// refused request found less than one token, which takes time to refill)
/// and at most one token's refill.
fn wait_in_range(out: &mut Out, at: u64, place: &Place, retry: u64, most: u64, what: &str) {
    if retry == 0 || retry > most {
        out.fail(
            "rate-limit",
            at,
            place.clone(),
            format!(
                "RATE_LIMIT_EXCEEDED ({what}) with retryAfterMs {retry}: a refusal waits 1..={most} ms (one token's refill)"
            ),
        );
    }
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
        // A refusal said no token was there before `written + retryAfterMs`:
        // a message accepted after the refusal and before then had none.
        for &(refused_at, until) in self
            .refusals
            .get(&(run, user.to_owned()))
            .into_iter()
            .flatten()
        {
            if ts > refused_at && ts < until {
                out.fail(
                    "rate-limit",
                    at,
                    place.clone(),
                    format!(
                        "{user}'s message accepted at {ts} ms, after a refusal (arrived at {refused_at} ms) whose retryAfterMs said no token before {until} ms"
                    ),
                );
            }
        }
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

impl Rate {
    /// A send of `user`, written at `written`, refused with `retry` (its
    /// `ERROR` arrived at `at`). The bucket's arithmetic: `retry` is what
    /// one token lacks, `ceil((1 - level) · W / C)`, so it is 1..=`ceil(W /
    /// C)`; the level when the server refused was at most what the
    /// messages accepted before `written` leave (other charges only lower
    /// it), which bounds `retry` from below; and no message of the user is
    /// accepted between the refusal and `written + retry`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_refused(
        &mut self,
        out: &mut Out,
        at: u64,
        place: Place,
        run: usize,
        user: &str,
        written: u64,
        retry: u64,
    ) {
        let (c, w) = (self.capacity, self.window_ms);
        wait_in_range(
            out,
            at,
            &place,
            retry,
            longest_wait(c, w),
            "user's send bucket",
        );
        // The bucket as the accepted messages alone leave it, in units of
        // 1/W token, refilled up to `at`.
        let full = c * w;
        let mut level = full;
        let mut last: Option<u64> = None;
        for &ts in self
            .accepted
            .get(&(run, user.to_owned()))
            .into_iter()
            .flatten()
            .filter(|&&ts| ts < written)
        {
            if let Some(prev) = last {
                level = (level + (ts - prev) * c).min(full);
            }
            level = level.saturating_sub(w);
            last = Some(ts);
        }
        if let Some(prev) = last {
            level = (level + at.saturating_sub(prev) * c).min(full);
        }
        if level < w {
            let least = (w - level).div_ceil(c);
            if retry < least {
                out.fail(
                    "rate-limit",
                    at,
                    place,
                    format!(
                        "retryAfterMs {retry} for {user}, but its accepted messages leave at most {level}/{w} of a token by {at} ms: a token is at least {least} ms away"
                    ),
                );
            }
        }
        self.refusals
            .entry((run, user.to_owned()))
            .or_default()
            .push((at, written + retry));
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
    /// Refusals by the connection's bucket: (arrived, written +
    /// retryAfterMs), per (run, connection).
    refusals: BTreeMap<(usize, u64), Vec<(u64, u64)>>,
    capacity: u64,
    window_ms: u64,
}

impl RequestRate {
    /// A bucket of `capacity` refilled over `window_ms`.
    pub fn new(capacity: u64, window_ms: u64) -> RequestRate {
        RequestRate {
            passed: BTreeMap::new(),
            refusals: BTreeMap::new(),
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
        for &(refused_at, until) in self.refusals.get(&(run, conn)).into_iter().flatten() {
            if written > refused_at && at < until {
                out.fail(
                    "rate-limit",
                    at,
                    place.clone(),
                    format!(
                        "a request written at {written} ms passed the connection's bucket by {at} ms, after a refusal (arrived at {refused_at} ms) whose retryAfterMs said no token before {until} ms"
                    ),
                );
            }
        }
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

impl RequestRate {
    /// A request of `conn`, written at `written`, refused by the
    /// connection's bucket with `retry` (arrived at `at`): `retry` is
    /// 1..=`ceil(W / RATE_LIMIT_REQUESTS)`, and no request of the
    /// connection written after the refusal passes before `written +
    /// retry`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_refused(
        &mut self,
        out: &mut Out,
        at: u64,
        place: Place,
        run: usize,
        conn: u64,
        written: u64,
        retry: u64,
    ) {
        let most = longest_wait(self.capacity, self.window_ms);
        wait_in_range(out, at, &place, retry, most, "connection's request bucket");
        self.refusals
            .entry((run, conn))
            .or_default()
            .push((at, written + retry));
    }

    /// A refusal whose bucket is not known (its request carried no
    /// `requestId`): within the longer of the two buckets' waits.
    pub fn on_refused_unknown(&self, out: &mut Out, at: u64, place: Place, retry: u64, most: u64) {
        let most = most.max(longest_wait(self.capacity, self.window_ms));
        wait_in_range(out, at, &place, retry, most, "either bucket");
    }
}
