//! The simulated Redis: one turmoil host holding a [`MemoryStore`] (whose
//! semantics the differential test holds equal to the Redis store's,
//! reply by reply and event by event), and [`SimStore`], the
//! [`Backend`] through which the production node code reaches it over
//! turmoil's network — so partitions, held links, latency and a crash of
//! the host reach the nodes as a real network would bring them.
//!
//! # Wire
//!
//! A frame is 16 bytes: a tag (the caller's number for a call, so that a
//! reply finds its call even when frames were lost) and a parcel number.
//! The parcel itself (an [`Op`], a [`Reply`], an [`Event`]…) waits in a
//! mailbox of the simulation's thread until the frame carrying its number
//! arrives: the network decides whether and when it arrives, nothing is
//! serialised. A partition drops frames as turmoil drops segments: a call
//! whose frame was lost times out (as a Redis call does), and an event
//! stream that stops answering its pings is connected again and says so
//! ([`Notice::Resubscribed`]), as the Redis subscriber does.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chat_flow::server::cluster::{Backend, Boxed, Events};
use chat_flow::store::memory::MemoryStore;
use chat_flow::store::redis::{Notice, StoreError};
use chat_flow::store::{Event, Op, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The store host's name and port.
pub const STORE: (&str, u16) = ("store", 6379);

/// What a frame carries.
#[derive(Debug)]
enum Parcel {
    Op(Box<Op>),
    Reply(Box<Reply>),
    Event(Box<Event>),
    Subscribe(String),
    Unsubscribe(String),
    Ping,
    Ack,
}

thread_local! {
    static MAILBOX: RefCell<(u64, HashMap<u64, Parcel>)> = RefCell::new((0, HashMap::new()));
}

/// Empties the mailbox (at the start of a run: parcels of lost frames are
/// never taken).
pub fn reset() {
    MAILBOX.with(|m| *m.borrow_mut() = (0, HashMap::new()));
}

fn post(parcel: Parcel) -> u64 {
    MAILBOX.with(|m| {
        let mut m = m.borrow_mut();
        m.0 += 1;
        let id = m.0;
        m.1.insert(id, parcel);
        id
    })
}

fn take(id: u64) -> Option<Parcel> {
    MAILBOX.with(|m| m.borrow_mut().1.remove(&id))
}

fn frame(tag: u64, parcel: Parcel) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[..8].copy_from_slice(&tag.to_be_bytes());
    f[8..].copy_from_slice(&post(parcel).to_be_bytes());
    f
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<(u64, Option<Parcel>)> {
    let mut f = [0u8; 16];
    r.read_exact(&mut f).await?;
    let tag = u64::from_be_bytes(f[..8].try_into().expect("8 bytes"));
    let id = u64::from_be_bytes(f[8..].try_into().expect("8 bytes"));
    Ok((tag, take(id)))
}

fn down(what: &str) -> StoreError {
    StoreError::Redis(
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, what.to_owned()).into(),
    )
}

// ----- the host ---------------------------------------------------------

struct Host {
    store: MemoryStore,
    /// Each connection's subscriptions and the way to write to it.
    subscribers: BTreeMap<u64, (BTreeSet<String>, mpsc::UnboundedSender<[u8; 16]>)>,
}

/// The store host's future: serves every connection until the host
/// crashes (its data is lost with it, as a Redis without persistence).
pub async fn serve() -> turmoil::Result {
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), STORE.1)).await?;
    let host = Rc::new(RefCell::new(Host {
        store: MemoryStore::new(),
        subscribers: BTreeMap::new(),
    }));
    let mut next = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next += 1;
        let conn = next;
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<[u8; 16]>();
        tokio::task::spawn_local(async move {
            while let Some(f) = rx.recv().await {
                if write.write_all(&f).await.is_err() {
                    return;
                }
            }
        });
        let host = host.clone();
        tokio::task::spawn_local(async move {
            while let Ok((tag, parcel)) = read_frame(&mut read).await {
                let mut h = host.borrow_mut();
                match parcel {
                    Some(Parcel::Op(op)) => {
                        let (reply, events) = h.store.apply(&op);
                        let _ = tx.send(frame(tag, Parcel::Reply(Box::new(reply))));
                        for event in events {
                            for (rooms, out) in h.subscribers.values() {
                                if rooms.contains(event.room()) {
                                    let _ =
                                        out.send(frame(0, Parcel::Event(Box::new(event.clone()))));
                                }
                            }
                        }
                    }
                    Some(Parcel::Subscribe(room)) => {
                        h.subscribers
                            .entry(conn)
                            .or_insert_with(|| (BTreeSet::new(), tx.clone()))
                            .0
                            .insert(room);
                        let _ = tx.send(frame(tag, Parcel::Ack));
                    }
                    Some(Parcel::Unsubscribe(room)) => {
                        if let Some((rooms, _)) = h.subscribers.get_mut(&conn) {
                            rooms.remove(&room);
                        }
                        let _ = tx.send(frame(tag, Parcel::Ack));
                    }
                    Some(Parcel::Ping) => {
                        let _ = tx.send(frame(tag, Parcel::Ack));
                    }
                    _ => {}
                }
            }
            host.borrow_mut().subscribers.remove(&conn);
        });
    }
}

// ----- a node's side: calls ---------------------------------------------

type Call = (Parcel, oneshot::Sender<Parcel>);

/// A node's connection to the store host: calls are written in the order
/// they are made (at their first poll) and matched to their replies by tag.
/// A call not answered within the timeout fails; the connection is then
/// made again, as a node cannot tell a slow store from a lost one.
#[derive(Clone)]
pub struct SimStore {
    calls: mpsc::UnboundedSender<Call>,
    timeout: Duration,
}

impl SimStore {
    /// Starts the connection task (in the node's runtime).
    pub fn start(timeout: Duration) -> SimStore {
        let (calls, rx) = mpsc::unbounded_channel();
        tokio::spawn(caller(rx, timeout));
        SimStore { calls, timeout }
    }

    fn call(
        &self,
        parcel: Parcel,
    ) -> impl Future<Output = Result<Parcel, StoreError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.calls.send((parcel, tx)).is_ok();
        let timeout = self.timeout;
        async move {
            if !sent {
                return Err(down("the store connection task is gone"));
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(_)) => Err(down("the store connection was lost")),
                Err(_) => Err(StoreError::Timeout(timeout)),
            }
        }
    }
}

/// Connects, then writes calls and routes replies until the connection is
/// lost or a call is overdue; then again.
async fn caller(mut calls: mpsc::UnboundedReceiver<Call>, timeout: Duration) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // A connect into a partition may never finish: given up after the
        // call timeout, as a client's connect timeout would.
        let connect = tokio::time::timeout(timeout, turmoil::net::TcpStream::connect(STORE));
        let stream = match connect.await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                // Calls made meanwhile fail at once, as Redis's do.
                while let Ok((_, tx)) = calls.try_recv() {
                    drop(tx);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (mut read, mut write) = stream.into_split();
        // Frames are read by a task of their own: a read cut short by the
        // select below would lose the part it had.
        let (frames_tx, mut frames) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(got) = read_frame(&mut read).await {
                if frames_tx.send(got).is_err() {
                    return;
                }
            }
        });
        let mut pending: BTreeMap<u64, (Instant, oneshot::Sender<Parcel>)> = BTreeMap::new();
        let mut tag = 0u64;
        let mut check = tokio::time::interval(timeout / 2);
        loop {
            // An overdue call means the connection is lost, also while
            // calls keep coming (they would win every turn of the select).
            let now = Instant::now();
            if pending.values().any(|(deadline, _)| *deadline <= now) {
                break;
            }
            tokio::select! {
                biased;
                call = calls.recv() => {
                    let Some((parcel, tx)) = call else { return };
                    tag += 1;
                    pending.insert(tag, (Instant::now() + timeout, tx));
                    if write.write_all(&frame(tag, parcel)).await.is_err() {
                        break;
                    }
                }
                got = frames.recv() => match got {
                    Some((tag, Some(parcel))) => {
                        if let Some((_, tx)) = pending.remove(&tag) {
                            let _ = tx.send(parcel);
                        }
                    }
                    Some((_, None)) => {}
                    None => break,
                },
                _ = check.tick() => {}
            }
        }
        reader.abort();
    }
}

impl Backend for SimStore {
    fn apply(&self, op: Op) -> Boxed<'static, Result<Reply, StoreError>> {
        let call = self.call(Parcel::Op(Box::new(op)));
        Box::pin(async move {
            match call.await? {
                Parcel::Reply(reply) => Ok(*reply),
                other => Err(StoreError::Decode(format!("{other:?} for an operation"))),
            }
        })
    }

    fn ping(&self) -> Boxed<'static, Result<(), StoreError>> {
        let call = self.call(Parcel::Ping);
        Box::pin(async move { call.await.map(|_| ()) })
    }

    fn events(&self) -> Box<dyn Events> {
        Box::new(SimEvents::start(self.timeout))
    }
}

// ----- a node's side: events --------------------------------------------

enum Ask {
    Subscribe(String, oneshot::Sender<Result<(), StoreError>>),
    Unsubscribe(String, oneshot::Sender<Result<(), StoreError>>),
}

/// A node's event stream from the store host.
pub struct SimEvents {
    asks: mpsc::UnboundedSender<Ask>,
    notices: mpsc::UnboundedReceiver<Notice>,
}

impl SimEvents {
    fn start(timeout: Duration) -> SimEvents {
        let (asks, ask_rx) = mpsc::unbounded_channel();
        let (notice_tx, notices) = mpsc::unbounded_channel();
        tokio::spawn(listen(ask_rx, notice_tx, timeout));
        SimEvents { asks, notices }
    }

    async fn ask(
        &self,
        make: fn(String, oneshot::Sender<Result<(), StoreError>>) -> Ask,
        room: &str,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.asks
            .send(make(room.to_owned(), tx))
            .map_err(|_| StoreError::SubscriberGone)?;
        rx.await.map_err(|_| StoreError::SubscriberGone)?
    }
}

impl Events for SimEvents {
    fn subscribe<'a>(&'a self, room: &'a str) -> Boxed<'a, Result<(), StoreError>> {
        Box::pin(self.ask(Ask::Subscribe, room))
    }

    fn unsubscribe<'a>(&'a self, room: &'a str) -> Boxed<'a, Result<(), StoreError>> {
        Box::pin(self.ask(Ask::Unsubscribe, room))
    }

    fn next(&mut self) -> Boxed<'_, Option<Notice>> {
        Box::pin(self.notices.recv())
    }
}

/// The event connection: subscribes every wanted room on each connection,
/// says `Resubscribed` once it is in, forwards events, and pings every
/// `timeout`: an unanswered ping means the connection is lost.
async fn listen(
    mut asks: mpsc::UnboundedReceiver<Ask>,
    notices: mpsc::UnboundedSender<Notice>,
    timeout: Duration,
) {
    let mut rooms: BTreeSet<String> = BTreeSet::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
        // What was asked while down is noted, and refused.
        while let Ok(ask) = asks.try_recv() {
            match ask {
                Ask::Subscribe(room, tx) => {
                    rooms.insert(room);
                    let _ = tx.send(Err(down("the event connection is down")));
                }
                Ask::Unsubscribe(room, tx) => {
                    rooms.remove(&room);
                    let _ = tx.send(Err(down("the event connection is down")));
                }
            }
        }
        let Ok(stream) = turmoil::net::TcpStream::connect(STORE).await else {
            continue;
        };
        let (mut read, mut write) = stream.into_split();
        let mut tag = 0u64;
        let mut lost = false;
        for room in &rooms {
            tag += 1;
            lost |= write
                .write_all(&frame(tag, Parcel::Subscribe(room.clone())))
                .await
                .is_err();
        }
        // The subscriptions are in once the last one is acknowledged.
        let last = tag;
        let mut acked = last == 0;
        if !lost && acked && notices.send(Notice::Resubscribed).is_err() {
            return;
        }
        let mut waiting: BTreeMap<u64, oneshot::Sender<Result<(), StoreError>>> = BTreeMap::new();
        let mut ping = tokio::time::interval(timeout);
        ping.tick().await;
        let mut unanswered: Option<u64> = None;
        while !lost {
            tokio::select! {
                biased;
                ask = asks.recv() => {
                    let Some(ask) = ask else { return };
                    tag += 1;
                    let (parcel, tx) = match ask {
                        Ask::Subscribe(room, tx) => {
                            rooms.insert(room.clone());
                            (Parcel::Subscribe(room), tx)
                        }
                        Ask::Unsubscribe(room, tx) => {
                            rooms.remove(&room);
                            (Parcel::Unsubscribe(room), tx)
                        }
                    };
                    waiting.insert(tag, tx);
                    lost = write.write_all(&frame(tag, parcel)).await.is_err();
                }
                got = read_frame(&mut read) => match got {
                    Ok((0, Some(Parcel::Event(event)))) => {
                        if notices.send(Notice::Event(*event)).is_err() {
                            return;
                        }
                    }
                    Ok((t, Some(Parcel::Ack))) => {
                        if unanswered == Some(t) {
                            unanswered = None;
                        }
                        if let Some(tx) = waiting.remove(&t) {
                            let _ = tx.send(Ok(()));
                        }
                        if !acked && t == last {
                            acked = true;
                            backoff = Duration::from_millis(50);
                            if notices.send(Notice::Resubscribed).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => lost = true,
                },
                _ = ping.tick() => {
                    if unanswered.is_some() || !acked {
                        lost = true;
                    } else {
                        tag += 1;
                        unanswered = Some(tag);
                        lost = write.write_all(&frame(tag, Parcel::Ping)).await.is_err();
                    }
                }
            }
        }
        for (_, tx) in waiting {
            let _ = tx.send(Err(down("the event connection was lost")));
        }
    }
}

/// A node's store, to hand to `server::run_node`.
pub fn backend(timeout: Duration) -> Arc<dyn Backend> {
    Arc::new(SimStore::start(timeout))
}
