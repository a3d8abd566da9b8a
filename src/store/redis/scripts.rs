//! The scripts, one per operation, each with the shared helpers of
//! `common.lua` in front (so that each is one `EVALSHA`).

use std::sync::LazyLock;

use redis::Script;

/// Declares each script and [`all`], the list of them (so that none is
/// left out of the loading at start-up).
macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)*) => {
        $(
            $(#[$doc])*
            pub static $name: LazyLock<Script> = LazyLock::new(|| {
                Script::new(concat!(include_str!("common.lua"), include_str!($file)))
            });
        )*

        /// Every script, to load them all at start-up.
        pub fn all() -> impl Iterator<Item = &'static Script> {
            [$(&$name),*].into_iter().map(|s| &**s)
        }
    };
}

scripts! {
    /// `EnsureRoom` and `CreateRoom`.
    CREATE_ROOM = "create_room.lua";
    /// `ListRooms`.
    LIST_ROOMS = "list_rooms.lua";
    /// `Join`.
    JOIN = "join.lua";
    /// `Lookup`.
    LOOKUP = "lookup.lua";
    /// `Since`.
    SINCE = "since.lua";
    /// `Leave`.
    LEAVE = "leave.lua";
    /// `History`.
    HISTORY = "history.lua";
    /// `Publish`.
    PUBLISH = "publish.lua";
    /// `Charge`.
    CHARGE = "charge.lua";
    /// `Typing`.
    TYPING = "typing.lua";
    /// `Heartbeat`.
    HEARTBEAT = "heartbeat.lua";
    /// `DeleteIfIdle`.
    DELETE_IF_IDLE = "delete_if_idle.lua";
}
