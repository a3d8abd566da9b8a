//! The contract's validation rules, each written once: lengths (in
//! characters), character classes and ranges. The parser applies them, and so
//! must anything else that accepts exactly what the contract accepts (room
//! ids and names in `DEFAULT_ROOMS`, the benchmarks' reference parser).

/// Most characters a `requestId` may have.
pub const REQUEST_ID_CHARS_MAX: usize = 128;
/// Most characters a room `name` may have.
pub const ROOM_NAME_CHARS_MAX: usize = 64;
/// Most characters a room `description` may have.
pub const ROOM_DESCRIPTION_CHARS_MAX: usize = 256;
/// Most characters a room `id` may have.
pub const ROOM_ID_CHARS_MAX: usize = 64;
/// Most characters a `clientMessageId` may have.
pub const CLIENT_MESSAGE_ID_CHARS_MAX: usize = 64;
/// Largest `limit` a `GET_HISTORY` may ask for.
pub const HISTORY_PAGE_MAX: u32 = 100;
/// `limit` of a `GET_HISTORY` that does not give one.
pub const HISTORY_PAGE_DEFAULT: u32 = 50;

/// Longest username, in Unicode code points.
pub const USERNAME_MAX_CHARS: usize = 32;

/// Whether `name` is an acceptable username: 1–32 Unicode code points and no
/// control characters. The contract's rule for the `AUTHENTICATE`
/// payload's `username`, which the token's `username` claim follows too.
pub fn valid_username(name: &str) -> bool {
    let mut count = 0usize;
    for c in name.chars() {
        count += 1;
        if count > USERNAME_MAX_CHARS || c.is_control() {
            return false;
        }
    }
    count >= 1
}

/// Number of Unicode code points in `s`: every length in the contract counts these.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// At most 128 characters: a `requestId`.
pub fn valid_request_id(id: &str) -> bool {
    char_len(id) <= REQUEST_ID_CHARS_MAX
}

/// `[A-Za-z0-9_-]{1,64}`: the shape of a room id (one a room may be given).
pub fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ROOM_ID_CHARS_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `roomId` a request may name: any non-empty string of at most four times
/// [`ROOM_ID_CHARS_MAX`] characters. Looser than [`valid_room_id`] on
/// purpose: a room id that cannot exist is still a well-formed request
/// (answered `ROOM_NOT_FOUND`), unless it is absurdly long.
pub fn valid_room_reference(id: &str) -> bool {
    !id.is_empty() && char_len(id) <= ROOM_ID_CHARS_MAX * 4
}

/// 1–`max` characters, no control characters, not only whitespace: a room
/// name (`max` = [`ROOM_NAME_CHARS_MAX`]).
pub fn valid_display_text(s: &str, max: usize) -> bool {
    valid_message_content(s, max) && !s.chars().any(char::is_control)
}

/// At most [`ROOM_DESCRIPTION_CHARS_MAX`] characters: a room `description`.
pub fn valid_room_description(s: &str) -> bool {
    char_len(s) <= ROOM_DESCRIPTION_CHARS_MAX
}

/// 1–`max` characters, not only whitespace: a message's `content` (`max` is
/// `MAX_CONTENT_LENGTH`). Unlike a name, content may hold line breaks.
pub fn valid_message_content(s: &str, max: usize) -> bool {
    (1..=max).contains(&char_len(s)) && !s.trim().is_empty()
}

/// 1–[`CLIENT_MESSAGE_ID_CHARS_MAX`] characters: a `clientMessageId`.
pub fn valid_client_message_id(id: &str) -> bool {
    (1..=CLIENT_MESSAGE_ID_CHARS_MAX).contains(&char_len(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_and_the_room_ids_a_request_may_name() {
        assert!(valid_room_id("a-b_9"));
        assert!(valid_room_id(&"r".repeat(ROOM_ID_CHARS_MAX)));
        for bad in ["", "bad id", "é", "a.b", &"r".repeat(ROOM_ID_CHARS_MAX + 1)] {
            assert!(!valid_room_id(bad), "{bad:?}");
        }
        // A request may name a room that cannot exist (ROOM_NOT_FOUND).
        assert!(valid_room_reference("bad id"));
        assert!(valid_room_reference(&"é".repeat(ROOM_ID_CHARS_MAX * 4)));
        assert!(!valid_room_reference(""));
        assert!(!valid_room_reference(
            &"é".repeat(ROOM_ID_CHARS_MAX * 4 + 1)
        ));
    }

    #[test]
    fn names_are_display_text_and_content_may_break_lines() {
        assert!(valid_display_text("General Chat", ROOM_NAME_CHARS_MAX));
        assert!(valid_display_text(&"é".repeat(3), 3));
        for bad in ["", "   ", "a\nb", "a\u{7}b", "éééé"] {
            assert!(!valid_display_text(bad, 3), "{bad:?}");
        }
        assert!(valid_message_content("a\nb", 3));
        assert!(valid_message_content(&"é".repeat(3), 3));
        for bad in ["", " \n\t", "éééé"] {
            assert!(!valid_message_content(bad, 3), "{bad:?}");
        }
    }

    #[test]
    fn lengths_count_characters() {
        assert!(valid_request_id(""));
        assert!(valid_request_id(&"é".repeat(REQUEST_ID_CHARS_MAX)));
        assert!(!valid_request_id(&"é".repeat(REQUEST_ID_CHARS_MAX + 1)));
        assert!(valid_room_description(""));
        assert!(valid_room_description(
            &"é".repeat(ROOM_DESCRIPTION_CHARS_MAX)
        ));
        assert!(!valid_room_description(
            &"é".repeat(ROOM_DESCRIPTION_CHARS_MAX + 1)
        ));
        assert!(!valid_client_message_id(""));
        assert!(valid_client_message_id(
            &"é".repeat(CLIENT_MESSAGE_ID_CHARS_MAX)
        ));
        assert!(!valid_client_message_id(
            &"é".repeat(CLIENT_MESSAGE_ID_CHARS_MAX + 1)
        ));
    }

    #[test]
    fn usernames() {
        assert!(valid_username("alice"));
        assert!(valid_username(&"ü".repeat(32)));
        assert!(valid_username("a b"));
        assert!(!valid_username(""));
        assert!(!valid_username(&"a".repeat(33)));
        assert!(!valid_username("tab\there"));
        assert!(!valid_username("nul\0"));
        assert!(!valid_username("del\u{7f}"));
    }
}
