//! A node's pub/sub connection: the events of the rooms it subscribes to.
//!
//! One task owns the connection. It subscribes and unsubscribes as asked,
//! decodes every message into an [`Event`] (in the order the scripts
//! published them: Redis delivers a channel's messages in order on one
//! connection), and pings Redis every `timeout` so that a connection that
//! went silent is noticed as well as one that closed. When the connection
//! is lost it reconnects, subscribes to every room again, and says
//! [`Notice::Resubscribed`]: what was published in between is missed, and
//! the node must resynchronise (a client's recovery by `sinceSeq` does).

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};

use super::codec;
use super::error::{StoreError, within};
use super::keys::Keys;
use crate::store::Event;

/// What the subscriber hands out.
#[derive(Debug)]
pub enum Notice {
    /// An event of a subscribed room.
    Event(Event),
    /// The connection was lost and is back, subscribed to every room again:
    /// events published in between were missed.
    Resubscribed,
    /// A message on a subscribed channel that is not an event this store
    /// publishes (skipped).
    Undecodable(StoreError),
}

enum Command {
    Subscribe(String, oneshot::Sender<Result<(), StoreError>>),
    Unsubscribe(String, oneshot::Sender<Result<(), StoreError>>),
}

/// The pub/sub side of one node. Dropping it closes the connection.
#[derive(Debug)]
pub struct Subscriber {
    commands: mpsc::UnboundedSender<Command>,
    notices: mpsc::UnboundedReceiver<Notice>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Connects (within `timeout`) and starts the task.
    pub(crate) async fn start(
        client: redis::Client,
        keys: Keys,
        timeout: Duration,
    ) -> Result<Subscriber, StoreError> {
        let first = connect(&client, timeout).await?;
        Ok(Subscriber::run(client, keys, timeout, Some(first)))
    }

    /// Starts the task, which connects by itself (retrying while Redis is
    /// away) and says [`Notice::Resubscribed`] once connected: a node can
    /// start while Redis is down.
    pub(crate) fn spawn(client: redis::Client, keys: Keys, timeout: Duration) -> Subscriber {
        Subscriber::run(client, keys, timeout, None)
    }

    fn run(
        client: redis::Client,
        keys: Keys,
        timeout: Duration,
        first: Option<(PubSubSink, PubSubStream)>,
    ) -> Subscriber {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (notice_tx, notices) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            Task {
                client,
                keys,
                timeout,
                rooms: BTreeSet::new(),
                commands: command_rx,
                notices: notice_tx,
            }
            .run(first),
        );
        Subscriber {
            commands,
            notices,
            task,
        }
    }

    /// Subscribes to `room`'s events; once this returns `Ok`, every event
    /// published after it is delivered (or a [`Notice::Resubscribed`] says
    /// some were missed). On an error the room stays wanted: it is
    /// subscribed again with the others when the connection is back.
    pub async fn subscribe(&self, room: &str) -> Result<(), StoreError> {
        self.ask(Command::Subscribe, room).await
    }

    /// No more events of `room`.
    pub async fn unsubscribe(&self, room: &str) -> Result<(), StoreError> {
        self.ask(Command::Unsubscribe, room).await
    }

    /// Hands the task a command about `room` and waits for its answer.
    async fn ask(
        &self,
        command: fn(String, oneshot::Sender<Result<(), StoreError>>) -> Command,
        room: &str,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(room.to_owned(), tx))
            .map_err(|_| StoreError::SubscriberGone)?;
        rx.await.map_err(|_| StoreError::SubscriberGone)?
    }

    /// The next notice; `None` once the task is gone.
    pub async fn next(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }
}

async fn connect(
    client: &redis::Client,
    timeout: Duration,
) -> Result<(PubSubSink, PubSubStream), StoreError> {
    Ok(within(timeout, client.get_async_pubsub()).await?.split())
}

struct Task {
    client: redis::Client,
    keys: Keys,
    timeout: Duration,
    rooms: BTreeSet<String>,
    commands: mpsc::UnboundedReceiver<Command>,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Task {
    async fn bounded(
        &self,
        call: impl Future<Output = redis::RedisResult<()>>,
    ) -> Result<(), StoreError> {
        within(self.timeout, call).await
    }

    async fn run(mut self, first: Option<(PubSubSink, PubSubStream)>) {
        let mut backoff = Duration::from_millis(50);
        let mut connection = first;
        loop {
            // Serve the connection until it is lost (or the subscriber is
            // dropped: then the task ends).
            if let Some((sink, stream)) = &mut connection
                && !self.serve(sink, stream).await
            {
                return;
            }
            // Reconnect, and subscribe to every room again.
            loop {
                tokio::select! {
                    command = self.commands.recv() => match command {
                        None => return,
                        // Wanted or not any more, from the next connection on.
                        Some(command) => self.note(command, Err(StoreError::Redis(
                            (redis::ErrorKind::Io, "the pub/sub connection is down").into(),
                        ))),
                    },
                    () = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        let Ok((mut sink, stream)) = connect(&self.client, self.timeout).await else {
                            continue;
                        };
                        let channels: Vec<String> =
                            self.rooms.iter().map(|r| self.keys.channel(r)).collect();
                        if !channels.is_empty()
                            && self.bounded(sink.subscribe(&channels)).await.is_err()
                        {
                            continue;
                        }
                        connection = Some((sink, stream));
                        backoff = Duration::from_millis(50);
                        if self.notices.send(Notice::Resubscribed).is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Records what a command wants, answering it with `result`.
    fn note(&mut self, command: Command, result: Result<(), StoreError>) {
        match command {
            Command::Subscribe(room, reply) => {
                self.rooms.insert(room);
                let _ = reply.send(result);
            }
            Command::Unsubscribe(room, reply) => {
                self.rooms.remove(&room);
                let _ = reply.send(result);
            }
        }
    }

    /// Forwards events until the connection is lost (`true`) or the
    /// subscriber is dropped (`false`).
    async fn serve(&mut self, sink: &mut PubSubSink, stream: &mut PubSubStream) -> bool {
        let mut ping = tokio::time::interval(self.timeout.max(Duration::from_millis(100)));
        ping.tick().await;
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return false };
                    let result = match &command {
                        Command::Subscribe(room, _) => {
                            self.bounded(sink.subscribe(self.keys.channel(room))).await
                        }
                        Command::Unsubscribe(room, _) => {
                            self.bounded(sink.unsubscribe(self.keys.channel(room))).await
                        }
                    };
                    let lost = result.is_err();
                    self.note(command, result);
                    if lost {
                        return true;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { return true };
                    let channel = message.get_channel_name().as_bytes();
                    let notice = match self.keys.room_of_channel(channel) {
                        Some(room) => match std::str::from_utf8(room) {
                            Ok(room) => match codec::event(room, message.get_payload_bytes()) {
                                Ok(event) => Notice::Event(event),
                                Err(e) => Notice::Undecodable(e),
                            },
                            Err(_) => Notice::Undecodable(StoreError::decode("a room id that is not UTF-8")),
                        },
                        None => Notice::Undecodable(StoreError::decode(format!(
                            "a message on channel {:?}",
                            String::from_utf8_lossy(channel)
                        ))),
                    };
                    if self.notices.send(notice).is_err() {
                        return false;
                    }
                }
                _ = ping.tick() => {
                    // Subscribed, Redis answers PING with an array: any
                    // answer will do.
                    if within(self.timeout, sink.ping::<redis::Value>()).await.is_err() {
                        return true;
                    }
                }
            }
        }
    }
}
