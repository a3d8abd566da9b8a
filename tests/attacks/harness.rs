//! The arena every attack plays in: a server, two bystanders who must not
//! notice, and the helpers more than one topic uses.

use std::net::SocketAddr;
use std::sync::LazyLock;

use chat_flow::config::Config;
use chat_flow::server::RunningServer;
use serde_json::{Value, json};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::common::*;

/// The bystanders' room.
pub(crate) const ROOM: &str = "general";

/// Every case holds this shared; the memory case holds it exclusively, so
/// that the process's RSS it measures is its own doing (the tests of this
/// suite share one process).
static EXCLUSIVE: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// Mints a valid token for a user id on the arena's server.
pub(crate) type Mint = Box<dyn Fn(&str) -> String + Send + Sync>;

#[allow(dead_code)] // held for its Drop
enum Guard {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// A server under attack, and two bystanders in `general` who must not
/// notice.
pub(crate) struct Arena {
    pub(crate) addr: SocketAddr,
    /// `bystander-a`.
    pub(crate) a: Client,
    /// `bystander-b`.
    pub(crate) b: Client,
    pub(crate) mint: Mint,
    exchanges: u32,
    _server: RunningServer,
    _guard: Guard,
}

/// An arena on the defaults changed by `f`, with dev-secret tokens.
pub(crate) async fn arena(f: impl FnOnce(&mut Config)) -> Arena {
    let mut config = test_config();
    f(&mut config);
    Arena::start(config, Box::new(token), false).await
}

impl Arena {
    pub(crate) async fn start(config: Config, mint: Mint, exclusive: bool) -> Arena {
        let guard = if exclusive {
            Guard::Exclusive(EXCLUSIVE.write().await)
        } else {
            Guard::Shared(EXCLUSIVE.read().await)
        };
        let server = RunningServer::start(config).await.expect("server starts");
        let addr = server.addr;
        let mut a = Client::connect(addr).await;
        a.auth_token(&mint("bystander-a")).await;
        a.join(ROOM).await;
        let mut b = Client::connect(addr).await;
        b.auth_token(&mint("bystander-b")).await;
        b.join(ROOM).await;
        let joined = a.expect_type("USER_JOINED").await;
        assert_eq!(joined["payload"]["user"]["userId"], "bystander-b");
        Arena {
            addr,
            a,
            b,
            mint,
            exchanges: 0,
            _server: server,
            _guard: guard,
        }
    }

    /// A connection authenticated as `user` with a valid token.
    pub(crate) async fn attacker(&self, user: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.auth_token(&(self.mint)(user)).await;
        c
    }

    /// The bystanders still talk: a message each way, each the very next
    /// frame the other reads (within the usual 5 s), in `seq` order.
    pub(crate) async fn assert_bystanders_fine(&mut self) {
        self.exchanges += 1;
        let n = self.exchanges;
        let there = format!("a to b after the attack ({n})");
        let sent = self.a.say(ROOM, &there).await;
        let got = self.b.expect_type("NEW_MESSAGE").await;
        assert_eq!(
            got["payload"]["content"],
            there.as_str(),
            "bystander b: {got}"
        );
        assert_eq!(got["payload"]["userId"], "bystander-a");
        assert!(got.get("requestId").is_none(), "{got}");
        let back = format!("b to a after the attack ({n})");
        let answer = self.b.say(ROOM, &back).await;
        let got = self.a.expect_type("NEW_MESSAGE").await;
        assert_eq!(
            got["payload"]["content"],
            back.as_str(),
            "bystander a: {got}"
        );
        let seq = |v: &Value| v["payload"]["seq"].as_u64().expect("seq");
        assert_eq!(seq(&answer), seq(&sent) + 1, "no gap, no foreign message");
    }

    /// Both bystanders' next frame is `expected` (presence, typing, ...).
    pub(crate) async fn bystanders_see(&mut self, expected: &Value) {
        assert_eq!(&self.a.recv().await, expected, "bystander a");
        assert_eq!(&self.b.recv().await, expected, "bystander b");
    }
}

pub(crate) fn user_joined(user: &str) -> Value {
    json!({"type": "USER_JOINED", "payload": {"roomId": ROOM, "user": {"userId": user, "username": user}}})
}

pub(crate) fn user_left(user: &str) -> Value {
    json!({"type": "USER_LEFT", "payload": {"roomId": ROOM, "userId": user, "username": user}})
}

pub(crate) fn typing_update(user: &str, is_typing: bool) -> Value {
    json!({"type": "TYPING_UPDATE", "payload": {"roomId": ROOM, "userId": user, "username": user, "isTyping": is_typing}})
}

/// Reads (skipping pings and pongs) until a close frame; returns its code
/// and reason.
pub(crate) async fn close_of(raw: &mut RawWs) -> (u16, String) {
    loop {
        let frame = raw.read_frame().await.expect("a close frame, not EOF");
        match frame.opcode {
            op::PING | op::PONG => continue,
            op::CLOSE => {
                let code = frame.close_code().expect("a close code");
                let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("UTF-8 reason");
                return (code, reason);
            }
            _ => panic!("expected a close frame, got {frame:?}"),
        }
    }
}
