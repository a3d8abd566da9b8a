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
