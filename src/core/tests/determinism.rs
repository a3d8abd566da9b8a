//! Determinism: the same inputs give the same outputs, byte for byte.

use serde_json::json;

use super::harness::{TestHub, small_limits};
use crate::core::Output;

fn script(t: &mut TestHub) {
    let a = t.user("alice");
    let b = t.user("bob");
    let c = t.connect();
    t.join(a, "general");
    t.join(b, "general");
    t.call(a, "CREATE_ROOM", json!({"name": "Side"}), "c");
    t.typing(b, "general", true);
    for i in 0..8 {
        t.call(
            a,
            "SEND_MESSAGE",
            json!({"roomId": "general", "content": format!("m{i}"), "clientMessageId": format!("k{}", i % 3)}),
            &format!("m{i}"),
        );
        t.advance(37);
    }
    t.call(
        b,
        "JOIN_ROOM",
        json!({"roomId": "general", "sinceSeq": 2}),
        "r",
    );
    t.text(c, "nonsense");
    t.advance(20_000);
    t.frames(b);
    t.say(b, "general", "late");
    t.disconnect(a);
}

#[test]
fn the_same_script_gives_identical_outputs() {
    let mut one = TestHub::new(small_limits());
    let mut two = TestHub::new(small_limits());
    script(&mut one);
    script(&mut two);
    assert!(one.log.len() > 20, "the script does something");
    assert!(
        one.log.iter().any(|o| matches!(o, Output::Close { .. })),
        "the script closes the unauthenticated connection"
    );
    assert_eq!(one.log, two.log);
    // And the instance number is part of the outputs (ids, epochs).
    let mut three = TestHub::with(small_limits(), &[("general", "General Chat")], 7);
    script(&mut three);
    assert_eq!(one.log.len(), three.log.len());
    assert_ne!(one.log, three.log);
}
