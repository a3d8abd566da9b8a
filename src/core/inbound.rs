//! What the driver hands the core for each message received on a connection.
//!
//! The core never sees a raw token: the driver verifies an `AUTHENTICATE`'s
//! token (a signature check needs keys, and keys are the shell's) and hands
//! over the outcome. [`Inbound::from_message`] is the one way to do so, used
//! by the server, the simulation and the core's own tests alike.

use crate::auth::{AuthError, VerifiedToken};
use crate::protocol::{Authenticate, ClientMessage, ClientRequest, ParseError};

/// What `AUTHENTICATE` carries once the driver has verified the token.
pub type AuthOutcome = Result<VerifiedToken, AuthError>;

/// One input from a connection.
#[derive(Debug)]
pub enum Inbound {
    /// `AUTHENTICATE`, its token already verified by the driver.
    Authenticate {
        /// Echoed on the reply.
        request_id: Option<String>,
        /// The outcome of verifying the token the client sent.
        token: AuthOutcome,
        /// The username the client proposes (used only when the token has none).
        username: Option<String>,
    },
    /// Any other well-formed request. An `AUTHENTICATE` here carries a token
    /// nobody verified: the core refuses it as a failed authentication.
    Request(ClientMessage),
    /// A text frame that is not a valid request.
    Invalid(ParseError),
    /// A binary frame (the contract speaks text only).
    Binary,
}

impl Inbound {
    /// The input for a parsed request: the token of an `AUTHENTICATE` is
    /// replaced by `verify(token)`; any other request passes as it is.
    pub fn from_message(
        message: ClientMessage,
        verify: impl FnOnce(&str) -> AuthOutcome,
    ) -> Inbound {
        match message.request {
            ClientRequest::Authenticate(Authenticate { token, username }) => {
                Inbound::Authenticate {
                    request_id: message.request_id,
                    token: verify(&token),
                    username,
                }
            }
            request => Inbound::Request(ClientMessage {
                request_id: message.request_id,
                request,
            }),
        }
    }

    /// The `requestId` that replies to this input echo.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Inbound::Authenticate { request_id, .. } => request_id.as_deref(),
            Inbound::Request(m) => m.request_id.as_deref(),
            Inbound::Invalid(e) => e.request_id.as_deref(),
            Inbound::Binary => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LeaveRoom, ParseError};

    fn verified(user: &str) -> VerifiedToken {
        VerifiedToken {
            user_id: user.to_owned(),
            username: None,
            rooms: Vec::new(),
            expires_at_unix_ms: 1,
        }
    }

    #[test]
    fn from_message_verifies_the_token_of_an_authenticate_only() {
        let message = ClientMessage {
            request_id: Some("a".to_owned()),
            request: ClientRequest::Authenticate(Authenticate {
                token: "raw".to_owned(),
                username: Some("Al".to_owned()),
            }),
        };
        let inbound = Inbound::from_message(message, |token| {
            assert_eq!(token, "raw");
            Ok(verified("al"))
        });
        assert_eq!(inbound.request_id(), Some("a"));
        let Inbound::Authenticate {
            request_id,
            token,
            username,
        } = inbound
        else {
            panic!("expected Inbound::Authenticate, got {inbound:?}");
        };
        assert_eq!(request_id.as_deref(), Some("a"));
        assert_eq!(token, Ok(verified("al")));
        assert_eq!(username.as_deref(), Some("Al"));

        let refused = ClientMessage {
            request_id: None,
            request: ClientRequest::Authenticate(Authenticate {
                token: "bad".to_owned(),
                username: None,
            }),
        };
        let inbound = Inbound::from_message(refused, |_| Err(AuthError::BadSignature));
        assert!(matches!(
            inbound,
            Inbound::Authenticate {
                token: Err(AuthError::BadSignature),
                ..
            }
        ));

        let leave = ClientMessage {
            request_id: Some("l".to_owned()),
            request: ClientRequest::LeaveRoom(LeaveRoom {
                room_id: "r".to_owned(),
            }),
        };
        let inbound = Inbound::from_message(leave.clone(), |_| panic!("nothing to verify"));
        assert!(matches!(&inbound, Inbound::Request(m) if *m == leave));
        assert_eq!(inbound.request_id(), Some("l"));
    }

    #[test]
    fn request_id_of_invalid_and_binary_inputs() {
        let invalid = Inbound::Invalid(ParseError {
            request_id: Some("x".to_owned()),
            reason: "malformed JSON".to_owned(),
        });
        assert_eq!(invalid.request_id(), Some("x"));
        assert_eq!(Inbound::Binary.request_id(), None);
    }
}
