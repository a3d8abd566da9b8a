//! Operations: what a scenario does, generated at random in a few mixes.

use quickcheck::{Arbitrary, Gen};

/// Which epoch a recovering `JOIN_ROOM` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EpochChoice {
    Absent,
    Current,
    Stale,
}

/// Who does something where. Connections are picked among the live ones by
/// index (modulo their number), so that any sub-sequence of a scenario is
/// still a valid scenario. Unless `stray`, the pick prefers authenticated
/// connections and rooms the connection has joined, so that most requests
/// do something; a stray one may hit an unauthenticated connection or a room
/// it has not joined.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    pub(super) conn: u8,
    pub(super) room: u8,
    pub(super) stray: bool,
}

/// One step.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// A new connection, authenticating at once as that user if given.
    Connect {
        auth: Option<u8>,
    },
    /// `AUTHENTICATE` as the current user of a slot (preferably on a
    /// connection that has not authenticated yet).
    Auth {
        conn: u8,
        slot: u8,
    },
    AuthRefused {
        conn: u8,
    },
    Join {
        to: Target,
        since: Option<u8>,
        epoch: EpochChoice,
    },
    Leave {
        to: Target,
    },
    Send {
        to: Target,
        client_id: Option<u8>,
    },
    Typing {
        to: Target,
        on: bool,
    },
    History {
        to: Target,
        before: Option<u8>,
        limit: u8,
    },
    Advance(u16),
    Disconnect {
        conn: u8,
    },
}

/// Relative weights of each kind of operation, and the longest time step.
pub(super) struct Mix {
    pub(super) connect: u32,
    pub(super) auth: u32,
    pub(super) auth_refused: u32,
    pub(super) join: u32,
    pub(super) leave: u32,
    pub(super) send: u32,
    pub(super) typing: u32,
    pub(super) history: u32,
    pub(super) advance: u32,
    pub(super) disconnect: u32,
    /// Percentage of joins that try to recover (`sinceSeq`).
    pub(super) recover_percent: u8,
    pub(super) advance_max_ms: u16,
}

pub(super) const MIXES: [Mix; 4] = [
    // Everything.
    Mix {
        connect: 6,
        auth: 10,
        auth_refused: 2,
        join: 14,
        leave: 5,
        send: 28,
        typing: 10,
        history: 8,
        advance: 12,
        disconnect: 5,
        recover_percent: 50,
        advance_max_ms: 3_000,
    },
    // Bursts of sends: rate limits, eviction, retries.
    Mix {
        connect: 3,
        auth: 5,
        auth_refused: 0,
        join: 6,
        leave: 1,
        send: 60,
        typing: 5,
        history: 5,
        advance: 13,
        disconnect: 2,
        recover_percent: 50,
        advance_max_ms: 700,
    },
    // Connections coming and going, recovering as they rejoin.
    Mix {
        connect: 12,
        auth: 14,
        auth_refused: 1,
        join: 20,
        leave: 6,
        send: 20,
        typing: 4,
        history: 6,
        advance: 8,
        disconnect: 12,
        recover_percent: 85,
        advance_max_ms: 3_000,
    },
    // Users leaving altogether and coming back, sending in bursts.
    Mix {
        connect: 15,
        auth: 2,
        auth_refused: 0,
        join: 12,
        leave: 0,
        send: 45,
        typing: 0,
        history: 0,
        advance: 12,
        disconnect: 14,
        recover_percent: 20,
        advance_max_ms: 1_000,
    },
];

pub(super) fn small(g: &mut Gen, n: u8) -> u8 {
    u8::arbitrary(g) % n
}

impl Op {
    pub(super) fn arbitrary_in(g: &mut Gen, mix: &Mix) -> Op {
        let weights = [
            mix.connect,
            mix.auth,
            mix.auth_refused,
            mix.join,
            mix.leave,
            mix.send,
            mix.typing,
            mix.history,
            mix.advance,
            mix.disconnect,
        ];
        let total: u32 = weights.iter().sum();
        let mut pick = u32::arbitrary(g) % total;
        let mut kind = 0;
        while pick >= weights[kind] {
            pick -= weights[kind];
            kind += 1;
        }
        let conn = u8::arbitrary(g);
        let to = Target {
            conn,
            room: small(g, 3),
            stray: small(g, 100) < 12,
        };
        match kind {
            0 => Op::Connect {
                auth: (small(g, 100) < 85).then(|| small(g, 3)),
            },
            1 => Op::Auth {
                conn,
                slot: small(g, 3),
            },
            2 => Op::AuthRefused { conn },
            3 => Op::Join {
                to,
                since: (small(g, 100) < mix.recover_percent).then(|| u8::arbitrary(g)),
                epoch: *g
                    .choose(&[
                        EpochChoice::Absent,
                        EpochChoice::Current,
                        EpochChoice::Current,
                        EpochChoice::Stale,
                    ])
                    .expect("non-empty"),
            },
            4 => Op::Leave { to },
            5 => Op::Send {
                to,
                client_id: bool::arbitrary(g).then(|| small(g, 3)),
            },
            6 => Op::Typing {
                to,
                on: small(g, 4) != 0,
            },
            7 => Op::History {
                to,
                before: bool::arbitrary(g).then(|| u8::arbitrary(g)),
                limit: 1 + small(g, 8),
            },
            8 => Op::Advance(u16::arbitrary(g) % (mix.advance_max_ms + 1)),
            _ => Op::Disconnect { conn },
        }
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        Op::arbitrary_in(g, &MIXES[0])
    }
}

/// A history limit and a list of operations, drawn with mix number `MIX`.
#[derive(Debug, Clone)]
pub(super) struct Scenario<const MIX: usize> {
    pub(super) history_limit: usize,
    pub(super) ops: Vec<Op>,
}

impl<const MIX: usize> Arbitrary for Scenario<MIX> {
    fn arbitrary(g: &mut Gen) -> Self {
        let len = usize::arbitrary(g) % (g.size() + 1);
        Scenario {
            history_limit: 3 + usize::from(small(g, 5)),
            ops: (0..len).map(|_| Op::arbitrary_in(g, &MIXES[MIX])).collect(),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let history_limit = self.history_limit;
        Box::new(
            self.ops
                .shrink()
                .map(move |ops| Scenario { history_limit, ops }),
        )
    }
}
