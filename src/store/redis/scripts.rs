//! The scripts, one per operation, each with the shared helpers of
//! `common.lua` in front (so that each is one `EVALSHA`).

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("common.lua"), include_str!($file))))
    };
}

/// `EnsureRoom` and `CreateRoom`.
pub static CREATE_ROOM: LazyLock<Script> = script!("create_room.lua");
/// `ListRooms`.
pub static LIST_ROOMS: LazyLock<Script> = script!("list_rooms.lua");
/// `Join`.
pub static JOIN: LazyLock<Script> = script!("join.lua");
/// `Lookup`.
pub static LOOKUP: LazyLock<Script> = script!("lookup.lua");
/// `Since`.
pub static SINCE: LazyLock<Script> = script!("since.lua");
/// `Leave`.
pub static LEAVE: LazyLock<Script> = script!("leave.lua");
/// `History`.
pub static HISTORY: LazyLock<Script> = script!("history.lua");
/// `Publish`.
pub static PUBLISH: LazyLock<Script> = script!("publish.lua");
/// `Charge`.
pub static CHARGE: LazyLock<Script> = script!("charge.lua");
/// `Typing`.
pub static TYPING: LazyLock<Script> = script!("typing.lua");
/// `Heartbeat`.
pub static HEARTBEAT: LazyLock<Script> = script!("heartbeat.lua");
/// `DeleteIfIdle`.
pub static DELETE_IF_IDLE: LazyLock<Script> = script!("delete_if_idle.lua");

/// Every script, to load them all at start-up.
pub fn all() -> [&'static Script; 12] {
    [
        &CREATE_ROOM,
        &LIST_ROOMS,
        &JOIN,
        &LOOKUP,
        &SINCE,
        &LEAVE,
        &HISTORY,
        &PUBLISH,
        &CHARGE,
        &TYPING,
        &HEARTBEAT,
        &DELETE_IF_IDLE,
    ]
}
