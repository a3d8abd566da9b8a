/**
 * The Chat Flow client: one WebSocket at a time, reconnected with backoff,
 * authenticated with a fresh token each time, every joined room resumed with
 * `sinceSeq` + `epoch`, every unacknowledged send resent with its
 * `clientMessageId`. See README.md for the semantics and index.d.ts for the
 * documented API.
 */

import { backoffDelay } from './backoff.js';
import { ChatClientError } from './errors.js';
import { Outbox, Rooms } from './session.js';
import { tokenExpiresAt } from './token.js';

/** `WebSocket.OPEN`. */
const OPEN = 1;

/** Close codes of the contract. */
const CLOSE_POLICY = 1008;
const CLOSE_TOO_BIG = 1009;

const DEFAULTS = {
  username: undefined,
  backoffBaseMs: 100,
  backoffMaxMs: 10_000,
  connectTimeoutMs: 10_000,
  heartbeatIntervalMs: 25_000,
  idleTimeoutMs: 40_000,
  autoRefresh: true,
  refreshMarginMs: 60_000,
  requestTimeoutMs: 30_000,
  outboxMax: 1000,
  sendWindow: 4,
  maxMessageBytes: 65_536,
  typingRenewMs: 3000,
  typingIdleMs: 3000,
  closeTimeoutMs: 1000,
};

/** Requests other than sends and heartbeats: they share one window. */
const CONTROL = new Set(['join', 'leave', 'request']);

/**
 * Most of them in flight at once: fewer than any sensible
 * `RATE_LIMIT_DISCONNECT_AFTER`, so that a burst (a resume of many rooms)
 * cannot be refused often enough in a row to be closed for abuse.
 */
const REQUEST_WINDOW = 4;

/** Request kinds that may simply be written again on a new connection. */
const RETRYABLE = new Set(['LIST_ROOMS', 'GET_HISTORY', 'PING']);

const defaultClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle),
};

const utf8 = new TextEncoder();

function noop() {}

/** A promise that never counts as unhandled: failures are also events. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(noop);
  return { promise, resolve, reject };
}

export class ChatClient {
  #opts;
  #WebSocket;
  #random;
  #clock;
  #tokenSource;

  /** @type {'idle'|'connecting'|'authenticating'|'open'|'reconnecting'|'closed'} */
  #state = 'idle';
  #closed = false;
  #closeDone = null;
  /** The current connection (see `#dial`), or null. */
  #conn = null;
  /** Bumped to make a pending dial (awaiting its token) stale. */
  #dialId = 0;
  #attempt = 0;
  /** The token the server refused last (1008 or a failed AUTHENTICATE). */
  #refusedToken = null;
  #userId = null;
  #username = null;

  #rooms = new Rooms();
  #outbox;
  /** Requests waiting to be written, in order (joins, leaves, others). */
  #queue = [];
  #queueSeq = 0;
  #requestGateUntil = 0;
  /** A request was rate-limited and none answered since: one at a time. */
  #requestsCareful = false;
  /** @type {Map<string, Array<{ resolve: Function, reject: Function }>>} */
  #joinWaiters = new Map();
  #ready = null;
  /** Waiters of `refreshToken()` until the next accepted token. */
  #refreshWaiters = [];
  /** @type {Map<string, { sentAt: number, timer: any }>} */
  #typing = new Map();

  #idPrefix;
  #nextCmid = 0;
  #nextRid = 0;

  #timers = { reconnect: null, connect: null, heartbeat: null, refresh: null, send: null, gate: null };
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();

  constructor(options) {
    if (options === null || typeof options !== 'object') throw new TypeError('ChatClient: options are required');
    if (typeof options.url !== 'string' || options.url === '') throw new TypeError('ChatClient: options.url is required');
    const token = options.token;
    if (typeof token === 'string') this.#tokenSource = () => token;
    else if (typeof token === 'function') this.#tokenSource = token;
    else throw new TypeError('ChatClient: options.token must be a string or a function returning one');
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('ChatClient: no WebSocket: pass options.WebSocket (e.g. the `ws` package on Node 20)');
    }
    this.#random = options.random ?? Math.random;
    this.#clock = { ...defaultClock, ...(options.clock ?? {}) };
    this.#opts = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) {
      if (options[key] !== undefined) this.#opts[key] = options[key];
    }
    this.#opts.url = options.url;
    this.#outbox = new Outbox(this.#opts.outboxMax, Math.max(1, this.#opts.sendWindow));
    let prefix = '';
    for (let i = 0; i < 12; i++) prefix += Math.floor(this.#random() * 36).toString(36);
    this.#idPrefix = prefix;
  }

  // ------------------------------------------------------------ events ----

  on(event, listener) {
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  once(event, listener) {
    const off = this.on(event, (value) => {
      off();
      listener(value);
    });
    return off;
  }

  #emit(event, value) {
    const set = this.#listeners.get(event);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (error) {
        // A listener's exception must not leave the client half-way through
        // a frame: report it apart from the client's own flow.
        if (event !== 'error' && (this.#listeners.get('error')?.size ?? 0) > 0) {
          this.#emit('error', new ChatClientError('LISTENER_ERROR', `a '${event}' listener threw`, { cause: error }));
        } else {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit('state', state);
  }

  // ----------------------------------------------------------- getters ----

  get state() {
    return this.#state;
  }

  get userId() {
    return this.#userId;
  }

  get username() {
    return this.#username;
  }

  get rooms() {
    return this.#rooms.ids();
  }

  get outboxSize() {
    return this.#outbox.size;
  }

  room(roomId) {
    const c = this.#rooms.cursor(roomId);
    if (c === undefined) return undefined;
    return { roomId, epoch: c.epoch, lastSeq: c.lastSeq, joined: this.#conn?.joined.has(roomId) ?? false };
  }

  // ------------------------------------------------------ connection ----

  connect() {
    if (this.#closed) return Promise.reject(new ChatClientError('CLOSED', 'the client is closed'));
    if (this.#ready === null) this.#ready = deferred();
    if (this.#state === 'idle') this.#dial();
    return this.#ready.promise;
  }

  close() {
    if (this.#closeDone === null) this.#stop('closed', null);
    return this.#closeDone;
  }

  async #tokenNow() {
    const token = await this.#tokenSource();
    if (typeof token !== 'string' || token === '') {
      throw new ChatClientError('TOKEN_ERROR', 'the token callback returned no token');
    }
    return token;
  }

  async #dial() {
    const dialId = ++this.#dialId;
    this.#setState('connecting');
    this.#emit('connecting', { attempt: this.#attempt });
    let token;
    try {
      token = await this.#tokenNow();
    } catch (error) {
      if (dialId !== this.#dialId || this.#closed) return;
      this.#emit('error', error instanceof ChatClientError ? error : new ChatClientError('TOKEN_ERROR', 'the token callback failed', { cause: error }));
      this.#reconnectLater(null, 'token callback failed');
      return;
    }
    if (dialId !== this.#dialId || this.#closed) return;
    if (this.#refusedToken !== null && token === this.#refusedToken) {
      this.#stop('token-refused', new ChatClientError('TOKEN_REFUSED', 'the server refused the token and the token callback gave the same one again'));
      return;
    }
    let ws;
    try {
      ws = new this.#WebSocket(this.#opts.url);
    } catch (error) {
      this.#emit('error', new ChatClientError('CONNECT_ERROR', 'cannot open a WebSocket', { cause: error }));
      this.#reconnectLater(null, 'cannot open a WebSocket');
      return;
    }
    const conn = {
      ws,
      /** The token the connection goes by (sent, then accepted). */
      token,
      authenticated: false,
      /** Rooms joined on this connection, and those with a JOIN in flight. */
      joined: new Set(),
      joining: new Set(),
      /** Requests written and not answered yet, by `requestId`, in order. */
      pending: new Map(),
      lastReceivedAt: this.#clock.now(),
      lastPingAt: -Infinity,
    };
    this.#conn = conn;
    ws.addEventListener('open', () => this.#onOpen(conn));
    ws.addEventListener('message', (event) => this.#onMessage(conn, event));
    ws.addEventListener('close', (event) => {
      if (conn === this.#conn) this.#lose(conn, event.code, event.reason ?? '');
    });
    // A 'close' follows every 'error'.
    ws.addEventListener('error', noop);
    this.#timers.connect = this.#clock.setTimeout(() => {
      if (conn === this.#conn && !conn.authenticated) this.#lose(conn, null, 'connect timeout');
    }, this.#opts.connectTimeoutMs);
  }

  #onOpen(conn) {
    if (conn !== this.#conn) return;
    conn.lastReceivedAt = this.#clock.now();
    this.#setState('authenticating');
    this.#emit('connected', { attempt: this.#attempt });
    this.#authenticate(conn, conn.token, false);
  }

  #authenticate(conn, token, refresh) {
    const payload = { token };
    if (this.#opts.username !== undefined) payload.username = this.#opts.username;
    this.#write(conn, 'AUTHENTICATE', payload, { kind: 'auth', token, refresh });
  }

  /** Drops `conn` and schedules the next attempt. */
  #lose(conn, code, reason) {
    if (conn !== this.#conn) return;
    this.#conn = null;
    this.#abandon(conn.ws);
    for (const name of ['connect', 'heartbeat', 'refresh', 'send', 'gate']) this.#clearTimer(name);
    if (code === CLOSE_TOO_BIG) this.#failTooBig(conn);
    for (const entry of conn.pending.values()) {
      if (entry.kind === 'leave') {
        // A disconnect leaves every room.
        entry.resolve();
      } else if (entry.kind === 'request') {
        if (RETRYABLE.has(entry.request.type)) this.#enqueue(entry.request);
        else this.#settle(entry.request, new ChatClientError('DISCONNECTED', `the connection was lost before ${entry.request.type} was answered; it may or may not have taken effect`));
      }
    }
    this.#queue = this.#queue.filter((item) => {
      if (item.kind === 'leave') item.resolve();
      return item.kind === 'request';
    });
    this.#outbox.connectionLost();
    // The request bucket is per connection (the send bucket, per user, is not).
    this.#requestGateUntil = 0;
    this.#requestsCareful = false;
    for (const t of this.#typing.values()) this.#clock.clearTimeout(t.timer);
    this.#typing.clear();
    if (code === CLOSE_POLICY) this.#refusedToken = conn.token;
    this.#reconnectLater(code, reason);
  }

  /** After close 1009 the oldest unanswered request is the one too big. */
  #failTooBig(conn) {
    for (const [rid, entry] of conn.pending) {
      if (entry.kind === 'send') {
        conn.pending.delete(rid);
        this.#failSend(entry.item, new ChatClientError('MESSAGE_TOO_BIG', 'the server closed the connection: the message is too big', { requestId: rid }));
        return;
      }
      if (entry.kind === 'request') {
        conn.pending.delete(rid);
        this.#settle(entry.request, new ChatClientError('MESSAGE_TOO_BIG', 'the server closed the connection: the request is too big', { requestId: rid }));
        return;
      }
      if (entry.kind !== 'heartbeat') return;
    }
  }

  #reconnectLater(code, reason) {
    if (this.#closed) return;
    const delayMs = backoffDelay(this.#random, this.#attempt, this.#opts.backoffBaseMs, this.#opts.backoffMaxMs);
    this.#attempt += 1;
    this.#setState('reconnecting');
    this.#emit('disconnected', { code, reason, delayMs });
    this.#clearTimer('reconnect');
    this.#timers.reconnect = this.#clock.setTimeout(() => {
      this.#timers.reconnect = null;
      if (!this.#closed) this.#dial();
    }, delayMs);
  }

  /** Lets go of a socket at once (a dead peer would delay a clean close). */
  #abandon(ws) {
    try {
      if (typeof ws.terminate === 'function') ws.terminate();
      else ws.close();
    } catch {
      // Already closed.
    }
  }

  #stop(reason, error) {
    this.#closed = true;
    this.#dialId += 1;
    for (const name of Object.keys(this.#timers)) this.#clearTimer(name);
    for (const t of this.#typing.values()) this.#clock.clearTimeout(t.timer);
    this.#typing.clear();
    const closedError = error ?? new ChatClientError('CLOSED', 'the client is closed');
    const conn = this.#conn;
    this.#conn = null;
    if (conn !== null) {
      for (const entry of conn.pending.values()) {
        if (entry.kind === 'leave') entry.resolve();
        else if (entry.kind === 'request') this.#settle(entry.request, closedError);
      }
    }
    for (const item of this.#queue) {
      if (item.kind === 'leave') item.resolve();
      else if (item.kind === 'request') this.#settle(item, closedError);
    }
    this.#queue = [];
    for (const item of [...this.#outbox.items]) {
      this.#outbox.remove(item);
      item.reject(closedError);
    }
    for (const waiters of this.#joinWaiters.values()) for (const w of waiters) w.reject(closedError);
    this.#joinWaiters.clear();
    for (const w of this.#refreshWaiters.splice(0)) w.reject(closedError);
    if (this.#ready !== null) this.#ready.reject(closedError);
    else this.#ready = { promise: Promise.reject(closedError), resolve: noop, reject: noop };
    this.#ready.promise.catch(noop);
    this.#closeDone = conn === null ? Promise.resolve() : this.#closeSocket(conn.ws);
    this.#setState('closed');
    this.#emit('closed', { reason, error: error ?? null });
  }

  /** Closes `ws` cleanly (1000), or drops it after `closeTimeoutMs`. */
  #closeSocket(ws) {
    return new Promise((resolve) => {
      if (ws.readyState === 3) return resolve();
      let timer = null;
      const done = () => {
        if (timer !== null) this.#clock.clearTimeout(timer);
        timer = null;
        resolve();
      };
      ws.addEventListener('close', done);
      timer = this.#clock.setTimeout(() => {
        timer = null;
        this.#abandon(ws);
        resolve();
      }, this.#opts.closeTimeoutMs);
      try {
        if (ws.readyState === OPEN) ws.close(1000, 'client closed');
        else this.#abandon(ws);
      } catch {
        done();
      }
    });
  }

  #clearTimer(name) {
    if (this.#timers[name] !== null) {
      this.#clock.clearTimeout(this.#timers[name]);
      this.#timers[name] = null;
    }
  }

  // ------------------------------------------------------------ writes ----

  /**
   * Writes one request on `conn`; `entry` (when given) is what its reply is
   * matched with, by `requestId`.
   */
  #write(conn, type, payload, entry) {
    const message = { type, payload };
    let rid;
    if (entry !== undefined) {
      rid = `${entry.kind[0]}${++this.#nextRid}`;
      message.requestId = rid;
      conn.pending.set(rid, entry);
    }
    try {
      conn.ws.send(JSON.stringify(message));
    } catch {
      // The socket is closing: its 'close' event resumes from here.
    }
    return rid;
  }

  #authenticated() {
    const conn = this.#conn;
    return conn !== null && conn.authenticated && conn.ws.readyState === OPEN ? conn : null;
  }

  /** Writes whatever may go now and arms the timers for what waits. */
  #pump() {
    const conn = this.#authenticated();
    if (conn === null) return;
    const now = this.#clock.now();
    // Requests other than sends, in order, through their own window, unless
    // rate-limited (one at a time after a rejection, until a reply).
    let inFlight = 0;
    for (const entry of conn.pending.values()) if (CONTROL.has(entry.kind)) inFlight += 1;
    const window = this.#requestsCareful ? 1 : REQUEST_WINDOW;
    while (this.#queue.length > 0 && now >= this.#requestGateUntil && inFlight < window) {
      const item = this.#queue.shift();
      if (item.kind === 'join') {
        if (!this.#rooms.has(item.roomId) || conn.joining.has(item.roomId)) continue;
        conn.joining.add(item.roomId);
        this.#write(conn, 'JOIN_ROOM', this.#rooms.joinPayload(item.roomId), { kind: 'join', roomId: item.roomId });
      } else if (item.kind === 'leave') {
        this.#write(conn, 'LEAVE_ROOM', { roomId: item.roomId }, { kind: 'leave', roomId: item.roomId, resolve: item.resolve, reject: item.reject });
      } else {
        if (item.type === 'PING') item.sentAt = now;
        this.#write(conn, item.type, item.payload, { kind: 'request', request: item });
      }
      inFlight += 1;
    }
    this.#clearTimer('gate');
    if (this.#queue.length > 0 && now < this.#requestGateUntil) {
      this.#timers.gate = this.#clock.setTimeout(() => {
        this.#timers.gate = null;
        this.#pump();
      }, Math.max(0, this.#requestGateUntil - now));
    }
    // Sends, through the window; a room's sends wait for it to be joined.
    const ready = (roomId) => !this.#rooms.has(roomId) || conn.joined.has(roomId);
    for (const item of this.#outbox.sendable(now, ready)) {
      const payload = { roomId: item.roomId, content: item.content, type: item.type, clientMessageId: item.clientMessageId };
      this.#write(conn, 'SEND_MESSAGE', payload, { kind: 'send', item });
    }
    this.#clearTimer('send');
    const due = this.#outbox.nextDue(ready);
    if (due !== null && due > now) {
      this.#timers.send = this.#clock.setTimeout(() => {
        this.#timers.send = null;
        this.#pump();
      }, due - now);
    }
  }

  #enqueue(item) {
    if (item.seq === undefined) item.seq = ++this.#queueSeq;
    let i = this.#queue.length;
    while (i > 0 && this.#queue[i - 1].seq > item.seq) i -= 1;
    this.#queue.splice(i, 0, item);
  }

  // ----------------------------------------------------------- replies ----

  #onMessage(conn, event) {
    if (conn !== this.#conn) return;
    conn.lastReceivedAt = this.#clock.now();
    if (typeof event.data !== 'string') return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== 'object' || typeof frame.type !== 'string') return;
    this.#emit('frame', frame);
    const payload = frame.payload ?? {};
    const rid = typeof frame.requestId === 'string' ? frame.requestId : undefined;
    const entry = rid === undefined ? undefined : conn.pending.get(rid);
    if (entry !== undefined) {
      conn.pending.delete(rid);
      if (CONTROL.has(entry.kind) && !(frame.type === 'ERROR' && payload.code === 'RATE_LIMIT_EXCEEDED')) {
        this.#requestsCareful = false;
      }
    }
    switch (frame.type) {
      case 'AUTH_SUCCESS':
        if (entry?.kind === 'auth') this.#onAuthSuccess(conn, entry, payload);
        break;
      case 'NEW_MESSAGE':
        this.#onNewMessage(payload, entry);
        break;
      case 'ROOM_JOINED':
        this.#onRoomJoined(conn, payload, entry);
        break;
      case 'ROOM_CREATED':
        this.#onRoomCreated(conn, payload, entry);
        break;
      case 'ROOM_LEFT':
        this.#onRoomLeft(conn, payload, entry);
        break;
      case 'ROOM_LIST':
        if (entry?.kind === 'request') this.#settle(entry.request, null, payload.rooms ?? []);
        break;
      case 'HISTORY':
        if (entry?.kind === 'request') this.#settle(entry.request, null, payload);
        break;
      case 'PONG':
        if (entry?.kind === 'request') this.#settle(entry.request, null, Math.max(0, this.#clock.now() - entry.request.sentAt));
        break;
      case 'USER_JOINED':
        this.#emit('userJoined', payload);
        break;
      case 'USER_LEFT':
        this.#emit('userLeft', payload);
        break;
      case 'TYPING_UPDATE':
        this.#emit('typing', payload);
        break;
      case 'ERROR':
        this.#onError(conn, payload, entry, rid);
        break;
      default:
        break;
    }
    if (conn === this.#conn) this.#pump();
  }

  #onAuthSuccess(conn, entry, payload) {
    conn.token = entry.token;
    this.#userId = payload.userId ?? null;
    this.#username = payload.username ?? null;
    const refreshed = conn.authenticated;
    if (!refreshed) {
      conn.authenticated = true;
      this.#clearTimer('connect');
      this.#attempt = 0;
      this.#refusedToken = null;
      this.#setState('open');
    }
    this.#emit('authenticated', { userId: this.#userId, username: this.#username, status: payload.status, refreshed });
    for (const w of this.#refreshWaiters.splice(0)) w.resolve();
    this.#armRefresh(conn, null);
    if (refreshed) return;
    // Resume: every wanted room from its cursor, before anything queued.
    this.#queue = this.#queue.filter((item) => item.kind !== 'join');
    for (const roomId of this.#rooms.ids().reverse()) this.#queue.unshift({ kind: 'join', roomId, seq: 0 });
    this.#armHeartbeat(conn);
    this.#ready?.resolve({ userId: this.#userId, username: this.#username });
  }

  #onNewMessage(message, entry) {
    let item = entry?.kind === 'send' ? entry.item : undefined;
    if (item === undefined && typeof message.clientMessageId === 'string' && message.userId === this.#userId) {
      item = this.#outbox.find(message.clientMessageId, message.roomId);
    }
    const delivered = this.#rooms.accept(message);
    if (item !== undefined && this.#outbox.contains(item)) {
      this.#outbox.acked(item);
      const stored = delivered ?? { ...message, epoch: this.#rooms.cursor(message.roomId)?.epoch ?? null };
      this.#emit('ack', { clientMessageId: item.clientMessageId, roomId: message.roomId, seq: message.seq, id: message.id, message: stored });
      item.resolve(stored);
    }
    if (delivered !== null) this.#emit('message', delivered);
  }

  #onRoomJoined(conn, payload, entry) {
    const roomId = payload.room?.id;
    if (typeof roomId !== 'string') return;
    if (entry?.kind === 'join') conn.joining.delete(roomId);
    const applied = this.#rooms.joined(payload);
    if (applied === null) return;
    conn.joined.add(roomId);
    this.#emit('joined', { roomId, room: payload.room, epoch: payload.epoch, recovered: payload.recovered, users: payload.users ?? [] });
    if (applied.gap !== null) this.#emit('gap', applied.gap);
    for (const m of applied.deliver) this.#emit('message', m);
    const waiters = this.#joinWaiters.get(roomId);
    this.#joinWaiters.delete(roomId);
    for (const w of waiters ?? []) w.resolve(payload);
  }

  #onRoomCreated(conn, payload, entry) {
    const roomId = payload.room?.id;
    if (typeof roomId === 'string') {
      // The creator is joined at once, at the start of an empty sequence.
      this.#rooms.created(roomId, payload.epoch);
      conn.joined.add(roomId);
      const users = this.#userId === null ? [] : [{ userId: this.#userId, username: this.#username }];
      this.#emit('joined', { roomId, room: payload.room, epoch: payload.epoch, recovered: undefined, users });
    }
    if (entry?.kind === 'request') this.#settle(entry.request, null, payload);
  }

  #onRoomLeft(conn, payload, entry) {
    const roomId = payload.roomId;
    if (entry?.kind === 'leave') {
      conn.joined.delete(roomId);
      entry.resolve();
      return;
    }
    if (entry !== undefined || typeof roomId !== 'string') return;
    // Unsolicited (v3): a token refresh no longer grants this private room.
    conn.joined.delete(roomId);
    conn.joining.delete(roomId);
    if (!this.#rooms.has(roomId)) return;
    this.#rooms.forget(roomId);
    this.#stopTypingLocally(roomId);
    this.#rejectJoinWaiters(roomId, new ChatClientError('FORBIDDEN', `the server removed the client from ${roomId}`));
    this.#emit('left', { roomId, reason: 'revoked' });
  }

  #onError(conn, payload, entry, rid) {
    const code = typeof payload.code === 'string' ? payload.code : 'SERVER_ERROR';
    const message = typeof payload.message === 'string' ? payload.message : code;
    const retryAfterMs = Number.isFinite(payload.retryAfterMs) ? payload.retryAfterMs : undefined;
    const error = new ChatClientError(code, message, { requestId: rid, retryAfterMs });
    const now = this.#clock.now();
    const limited = code === 'RATE_LIMIT_EXCEEDED';
    if (limited) this.#emit('rateLimited', { requestType: entry === undefined ? null : this.#entryType(entry), retryAfterMs: retryAfterMs ?? null });
    if (entry === undefined) {
      // A reply to no request of ours: the token expired, a typing update
      // was refused, …
      if (limited) this.#requestGateUntil = Math.max(this.#requestGateUntil, now + (retryAfterMs ?? 1000));
      this.#emit('serverError', error);
      return;
    }
    switch (entry.kind) {
      case 'auth':
        if (entry.refresh) {
          this.#emit('error', error);
          for (const w of this.#refreshWaiters.splice(0)) w.reject(error);
          this.#armRefresh(conn, limited ? (retryAfterMs ?? 1000) : null);
        } else {
          if (!limited) this.#refusedToken = entry.token;
          this.#emit('error', error);
          this.#lose(conn, null, `authentication failed: ${message}`);
        }
        break;
      case 'join':
        conn.joining.delete(entry.roomId);
        if (limited) {
          this.#requestsCareful = true;
          this.#requestGateUntil = Math.max(this.#requestGateUntil, now + (retryAfterMs ?? 1000));
          this.#enqueue({ kind: 'join', roomId: entry.roomId, seq: 0 });
        } else {
          const wasIn = this.#rooms.cursor(entry.roomId)?.epoch != null;
          this.#rooms.forget(entry.roomId);
          this.#rejectJoinWaiters(entry.roomId, error);
          if (wasIn) this.#emit('left', { roomId: entry.roomId, reason: 'rejected', error });
        }
        break;
      case 'leave':
        if (limited) {
          this.#requestsCareful = true;
          this.#requestGateUntil = Math.max(this.#requestGateUntil, now + (retryAfterMs ?? 1000));
          this.#enqueue({ kind: 'leave', roomId: entry.roomId, resolve: entry.resolve, reject: entry.reject, seq: 0 });
        } else if (code === 'NOT_A_MEMBER' || code === 'ROOM_NOT_FOUND') {
          entry.resolve();
        } else {
          entry.reject(error);
        }
        break;
      case 'send':
        if (!this.#outbox.contains(entry.item)) break;
        if (limited) {
          this.#outbox.retryLater(entry.item, now, retryAfterMs ?? 1000, true);
        } else if (code === 'SERVER_ERROR' && retryAfterMs !== undefined) {
          // Outcome unknown (v3, Redis unavailable): the retry is safe.
          this.#outbox.retryLater(entry.item, now, retryAfterMs, false);
        } else {
          this.#failSend(entry.item, error);
        }
        break;
      case 'request':
        if (limited) {
          this.#requestsCareful = true;
          this.#requestGateUntil = Math.max(this.#requestGateUntil, now + (retryAfterMs ?? 1000));
          this.#enqueue(entry.request);
        } else {
          this.#settle(entry.request, error);
        }
        break;
      default:
        break;
    }
  }

  #entryType(entry) {
    switch (entry.kind) {
      case 'auth':
        return 'AUTHENTICATE';
      case 'join':
        return 'JOIN_ROOM';
      case 'leave':
        return 'LEAVE_ROOM';
      case 'send':
        return 'SEND_MESSAGE';
      case 'heartbeat':
        return 'PING';
      default:
        return entry.request.type;
    }
  }

  #failSend(item, error) {
    this.#outbox.remove(item);
    this.#emit('sendFailed', { clientMessageId: item.clientMessageId, roomId: item.roomId, code: error.code, error });
    item.reject(error);
  }

  #rejectJoinWaiters(roomId, error) {
    const waiters = this.#joinWaiters.get(roomId);
    this.#joinWaiters.delete(roomId);
    for (const w of waiters ?? []) w.reject(error);
  }

  // ---------------------------------------------------- token refresh ----

  /**
   * Schedules the refresh of `conn`'s token: halfway to its expiry, or
   * `refreshMarginMs` before it, whichever is later (`retryInMs` instead
   * after a refused refresh).
   */
  #armRefresh(conn, retryInMs) {
    this.#clearTimer('refresh');
    if (!this.#opts.autoRefresh) return;
    const expiresAt = tokenExpiresAt(conn.token);
    if (expiresAt === null) return;
    const remaining = expiresAt - this.#clock.now();
    if (remaining <= 0) return;
    let delay;
    if (retryInMs !== null) delay = Math.min(retryInMs, remaining / 2);
    else delay = Math.max(remaining / 2, remaining - this.#opts.refreshMarginMs);
    this.#timers.refresh = this.#clock.setTimeout(() => {
      this.#timers.refresh = null;
      this.#refresh(conn);
    }, Math.max(0, delay));
  }

  async #refresh(conn) {
    if (conn !== this.#conn || !conn.authenticated) return;
    let token;
    try {
      token = await this.#tokenNow();
    } catch (error) {
      if (conn !== this.#conn) return;
      this.#emit('error', error instanceof ChatClientError ? error : new ChatClientError('TOKEN_ERROR', 'the token callback failed', { cause: error }));
      for (const w of this.#refreshWaiters.splice(0)) w.reject(error);
      this.#armRefresh(conn, 1000);
      return;
    }
    if (conn !== this.#conn || conn.ws.readyState !== OPEN) return;
    if (token === conn.token) {
      // Not renewed yet: ask again later, while the old token still holds.
      for (const w of this.#refreshWaiters.splice(0)) w.resolve();
      this.#armRefresh(conn, 1000);
      return;
    }
    this.#authenticate(conn, token, true);
  }

  refreshToken() {
    if (this.#closed) return Promise.reject(new ChatClientError('CLOSED', 'the client is closed'));
    const d = deferred();
    this.#refreshWaiters.push(d);
    const conn = this.#authenticated();
    if (conn !== null) {
      this.#clearTimer('refresh');
      this.#refresh(conn);
    }
    return d.promise;
  }

  // -------------------------------------------------------- heartbeat ----

  /**
   * Browsers hide WebSocket pings: after `heartbeatIntervalMs` of silence
   * the client sends `PING`; after `idleTimeoutMs` it gives the connection
   * up and reconnects.
   */
  #armHeartbeat(conn) {
    this.#clearTimer('heartbeat');
    const check = () => {
      this.#timers.heartbeat = null;
      if (conn !== this.#conn) return;
      const now = this.#clock.now();
      const { heartbeatIntervalMs, idleTimeoutMs } = this.#opts;
      if (now - conn.lastReceivedAt >= idleTimeoutMs) {
        this.#lose(conn, null, 'idle timeout');
        return;
      }
      const pinged = conn.lastPingAt >= conn.lastReceivedAt;
      if (!pinged && now - conn.lastReceivedAt >= heartbeatIntervalMs) {
        conn.lastPingAt = now;
        this.#write(conn, 'PING', {}, { kind: 'heartbeat' });
      }
      const nextPing = conn.lastPingAt >= conn.lastReceivedAt ? Infinity : conn.lastReceivedAt + heartbeatIntervalMs;
      const next = Math.min(nextPing, conn.lastReceivedAt + idleTimeoutMs);
      this.#timers.heartbeat = this.#clock.setTimeout(check, Math.max(1, next - now));
    };
    this.#timers.heartbeat = this.#clock.setTimeout(check, Math.max(1, Math.min(this.#opts.heartbeatIntervalMs, this.#opts.idleTimeoutMs)));
  }

  // --------------------------------------------------------- requests ----

  join(roomId) {
    if (this.#closed) return Promise.reject(new ChatClientError('CLOSED', 'the client is closed'));
    if (typeof roomId !== 'string' || roomId === '') return Promise.reject(new TypeError('join: roomId must be a non-empty string'));
    const d = deferred();
    const waiters = this.#joinWaiters.get(roomId) ?? [];
    waiters.push(d);
    this.#joinWaiters.set(roomId, waiters);
    this.#rooms.want(roomId);
    this.#enqueue({ kind: 'join', roomId });
    this.#pump();
    return d.promise;
  }

  leave(roomId) {
    if (this.#closed) return Promise.reject(new ChatClientError('CLOSED', 'the client is closed'));
    const d = deferred();
    this.#rooms.forget(roomId);
    this.#rejectJoinWaiters(roomId, new ChatClientError('LEFT', `left ${roomId} before it was joined`));
    // Leaving ends typing on the server.
    this.#stopTypingLocally(roomId);
    this.#queue = this.#queue.filter((item) => !(item.kind === 'join' && item.roomId === roomId));
    const conn = this.#authenticated();
    if (conn === null) {
      // Not connected: not in any room, and the next connection will not join it.
      d.resolve();
    } else {
      conn.joined.delete(roomId);
      conn.joining.delete(roomId);
      this.#enqueue({ kind: 'leave', roomId, resolve: d.resolve, reject: d.reject });
      this.#pump();
    }
    d.promise.then(() => {
      if (!this.#closed) this.#emit('left', { roomId, reason: 'requested' });
    }, noop);
    return d.promise;
  }

  #request(type, payload) {
    if (this.#closed) return Promise.reject(new ChatClientError('CLOSED', 'the client is closed'));
    const d = deferred();
    const item = { kind: 'request', type, payload, resolve: d.resolve, reject: d.reject, settled: false, timer: null };
    item.timer = this.#clock.setTimeout(() => {
      item.timer = null;
      this.#queue = this.#queue.filter((q) => q !== item);
      this.#settle(item, new ChatClientError('TIMEOUT', `${type} was not answered within ${this.#opts.requestTimeoutMs} ms`));
    }, this.#opts.requestTimeoutMs);
    this.#enqueue(item);
    this.#pump();
    return d.promise;
  }

  #settle(item, error, value) {
    if (item.settled) return;
    item.settled = true;
    if (item.timer !== null) this.#clock.clearTimeout(item.timer);
    item.timer = null;
    if (error !== null) item.reject(error);
    else item.resolve(value);
  }

  createRoom(options) {
    const o = options ?? {};
    const payload = { name: o.name };
    if (o.description !== undefined) payload.description = o.description;
    if (o.type !== undefined) payload.type = o.type;
    if (o.id !== undefined) payload.id = o.id;
    return this.#request('CREATE_ROOM', payload);
  }

  listRooms() {
    return this.#request('LIST_ROOMS', {});
  }

  history(roomId, options) {
    const payload = { roomId };
    if (options?.beforeSeq !== undefined) payload.beforeSeq = options.beforeSeq;
    if (options?.limit !== undefined) payload.limit = options.limit;
    return this.#request('GET_HISTORY', payload);
  }

  ping() {
    return this.#request('PING', {});
  }

  send(roomId, content, options) {
    if (this.#closed) return Promise.reject(new ChatClientError('CLOSED', 'the client is closed'));
    if (typeof roomId !== 'string' || typeof content !== 'string') {
      return Promise.reject(new TypeError('send: roomId and content must be strings'));
    }
    const type = options?.type ?? 'text';
    const clientMessageId = options?.clientMessageId ?? `${this.#idPrefix}-${++this.#nextCmid}`;
    const d = deferred();
    const item = { roomId, content, type, clientMessageId, resolve: d.resolve, reject: d.reject };
    // The frame as written, with room for the longest requestId it gets.
    const frame = JSON.stringify({ type: 'SEND_MESSAGE', payload: { roomId, content, type, clientMessageId }, requestId: 's9007199254740991' });
    if (utf8.encode(frame).length > this.#opts.maxMessageBytes) {
      const error = new ChatClientError('MESSAGE_TOO_BIG', `the message is larger than ${this.#opts.maxMessageBytes} bytes`);
      this.#emit('sendFailed', { clientMessageId, roomId, code: error.code, error });
      d.reject(error);
      return d.promise;
    }
    if (this.#outbox.full) {
      const error = new ChatClientError('OUTBOX_FULL', `${this.#outbox.size} messages are waiting to be sent (outboxMax)`);
      this.#emit('sendFailed', { clientMessageId, roomId, code: error.code, error });
      d.reject(error);
      return d.promise;
    }
    this.#outbox.add(item);
    // Sending a message ends typing on the server.
    this.#stopTypingLocally(roomId);
    this.#pump();
    return d.promise;
  }

  // ----------------------------------------------------------- typing ----

  typing(roomId) {
    const conn = this.#authenticated();
    if (this.#closed || conn === null || !conn.joined.has(roomId)) return;
    const now = this.#clock.now();
    let t = this.#typing.get(roomId);
    if (t === undefined) {
      t = { sentAt: -Infinity, timer: null };
      this.#typing.set(roomId, t);
    }
    if (now - t.sentAt >= this.#opts.typingRenewMs && now >= this.#requestGateUntil) {
      t.sentAt = now;
      this.#write(conn, 'TYPING_STATUS', { roomId, isTyping: true });
    }
    if (t.timer !== null) this.#clock.clearTimeout(t.timer);
    t.timer = this.#clock.setTimeout(() => {
      t.timer = null;
      this.stopTyping(roomId);
    }, this.#opts.typingIdleMs);
  }

  stopTyping(roomId) {
    this.#stopTypingLocally(roomId, true);
  }

  /** Forgets the typing state of `roomId`, telling the server when `tell`. */
  #stopTypingLocally(roomId, tell = false) {
    const t = this.#typing.get(roomId);
    if (t === undefined) return;
    if (t.timer !== null) this.#clock.clearTimeout(t.timer);
    this.#typing.delete(roomId);
    const conn = this.#authenticated();
    if (tell && conn !== null && conn.joined.has(roomId) && t.sentAt > -Infinity) {
      this.#write(conn, 'TYPING_STATUS', { roomId, isTyping: false });
    }
  }
}
