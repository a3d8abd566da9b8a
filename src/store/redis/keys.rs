//! Key and channel names.
//!
//! Every key starts with `REDIS_KEY_PREFIX`. A room's keys share the hash
//! tag `{<room id>}`, so that they live in one Redis Cluster slot:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `P:room:{id}` | hash | `name`, `description`, `kind`, `created_at`, `created_by` (absent for a default room), `epoch`, `seq` (last given), `empty_since` (since when nobody is in: set at creation and by the last leave, absent while someone is in), `awaiting_creator` (`1` from a `CreateRoom` until its creator's `Join`: the room is not there to others) |
//! | `P:room:{id}:log` | list | retained messages, oldest first: `<seq>:<n>:<retry key (n bytes)><frame>` |
//! | `P:room:{id}:retry` | hash | retry key `<user>\0<clientMessageId>` → `seq` of a retained message |
//! | `P:room:{id}:users` | hash | present user → `<holders>:<username>` |
//! | `P:room:{id}:holders` | hash | `<conn>:<node>` → user |
//! | `P:rooms` | sorted set | every room id, score 0 (lexicographic) |
//! | `P:creator:<user>` | set | the rooms a user created (`ROOMS_PER_USER_MAX`) |
//! | `P:bucket:<user>` | hash | the user's send bucket: `level`, `updated` |
//! | `P:nodes` | sorted set | node → lease expiry (ms) |
//! | `P:node:<node>:held` | set | `<conn>:<room>`: the node's holders, for a sweep |
//!
//! Channels: `P:ch:<room id>`, one per room.
//!
//! `<conn>` is decimal digits, so `<conn>:<rest>` splits at the first `:`
//! whatever a node or room id holds.

/// The names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// `REDIS_KEY_PREFIX`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A room's hash.
    pub fn room(&self, id: &str) -> String {
        format!("{}:room:{{{id}}}", self.prefix)
    }

    /// One of a room's other keys (`log`, `retry`, `users`, `holders`).
    pub fn room_part(&self, id: &str, part: &str) -> String {
        format!("{}:room:{{{id}}}:{part}", self.prefix)
    }

    /// The index of rooms.
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// The rooms `user` created.
    pub fn creator(&self, user: &str) -> String {
        format!("{}:creator:{user}", self.prefix)
    }

    /// `user`'s send bucket.
    pub fn bucket(&self, user: &str) -> String {
        format!("{}:bucket:{user}", self.prefix)
    }

    /// Node leases.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A node's holders.
    pub fn node_held(&self, node: &str) -> String {
        format!("{}:node:{node}:held", self.prefix)
    }

    /// A room's channel.
    pub fn channel(&self, room: &str) -> String {
        format!("{}:ch:{room}", self.prefix)
    }

    /// The room a channel is of, if it is one of ours.
    pub fn room_of_channel<'a>(&self, channel: &'a [u8]) -> Option<&'a [u8]> {
        channel
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":ch:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_keys_share_a_hash_tag() {
        let k = Keys::new("chatflow");
        assert_eq!(k.room("general"), "chatflow:room:{general}");
        assert_eq!(k.room_part("general", "log"), "chatflow:room:{general}:log");
        assert_eq!(k.channel("general"), "chatflow:ch:general");
        assert_eq!(
            k.room_of_channel(b"chatflow:ch:general"),
            Some(&b"general"[..])
        );
        assert_eq!(k.room_of_channel(b"other:ch:general"), None);
    }
}
