// TypeScript declarations of chat-flow-client, written by hand beside the
// JavaScript (no build step: browsers load the very files the tests test).
// Checked by `npm run typecheck` against test/types-check.ts.

/** A user as rooms and presence name them. */
export interface UserRef {
  userId: string;
  username: string;
}

/** A room, wherever the server shows one. */
export interface Room {
  id: string;
  name: string;
  description: string;
  type: 'public' | 'private';
  /** Distinct users in the room. */
  memberCount: number;
  /** RFC 3339 UTC with milliseconds. */
  createdAt: string;
  createdBy: string;
}

/** A chat message as the server sends it (`NEW_MESSAGE`, history). */
export interface ChatMessage {
  /** Unique across the server. */
  id: string;
  /** Position in the room's sequence: 1, 2, 3, … */
  seq: number;
  roomId: string;
  userId: string;
  username: string;
  content: string;
  type: 'text' | 'emote';
  /** When the server accepted it (RFC 3339 UTC with milliseconds). */
  timestamp: string;
  /** The sender's retry key, when it gave one (this client always does). */
  clientMessageId?: string;
}

/** A message delivered by the client: the server's, plus the room's epoch. */
export interface DeliveredMessage extends ChatMessage {
  /** The epoch of the sequence `seq` belongs to (added by the client). */
  epoch: string;
}

/** The `ROOM_JOINED` payload `join()` resolves with. */
export interface JoinResult {
  room: Room;
  epoch: string;
  /**
   * The messages the server listed (retained history, or those after
   * `sinceSeq` on a resume). Those not delivered yet also arrive as
   * `message` events, each once.
   */
  messages: ChatMessage[];
  users: UserRef[];
  /** Present only on a resume (`sinceSeq` was sent). */
  recovered?: boolean;
}

/** `CREATE_ROOM`'s reply. The creator is joined to the room at once. */
export interface CreateRoomResult {
  room: Room;
  epoch: string;
}

/** `GET_HISTORY`'s reply. */
export interface HistoryPage {
  roomId: string;
  /** Oldest first. */
  messages: ChatMessage[];
  /** Whether older retained messages exist. */
  hasMore: boolean;
}

/** Where the client is in a room. */
export interface RoomCursor {
  roomId: string;
  /** The epoch of the sequence the client is in; null before the first join reply. */
  epoch: string | null;
  /** The highest `seq` delivered in `epoch` (0: none yet). */
  lastSeq: number;
  /** Whether the room is joined on the current connection. */
  joined: boolean;
}

/** The client's connection state. */
export type ClientState =
  /** Created, `connect()` not called yet. */
  | 'idle'
  /** Getting a token and opening a WebSocket. */
  | 'connecting'
  /** `AUTHENTICATE` sent, waiting for `AUTH_SUCCESS`. */
  | 'authenticating'
  /** Authenticated: rooms resumed, sends flowing. */
  | 'open'
  /** Connection lost: waiting out the backoff before the next attempt. */
  | 'reconnecting'
  /** Closed for good (`close()`, or the token was refused twice). */
  | 'closed';

/**
 * Where the client gets its token: a fixed string, or a callback that is
 * called on every (re)connect and before the current token expires (it
 * should return a fresh one; returning the token the server just refused
 * with close 1008 stops the client).
 */
export type TokenSource = string | (() => string | Promise<string>);

/** A clock the client schedules with (injectable for tests). */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** A WebSocket constructor with the standard (WHATWG) interface. */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

/** What the client uses of a WebSocket. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void;
}

export interface ChatClientOptions {
  /** The WebSocket endpoint, e.g. `ws://localhost:3001/ws`. */
  url: string;
  /** The token, or the callback that gives one (see {@link TokenSource}). */
  token: TokenSource;
  /** Sent with `AUTHENTICATE`; the token's own `username` claim wins. */
  username?: string;
  /** The WebSocket constructor. Default: `globalThis.WebSocket` (Node 20 has none: pass `ws`). */
  WebSocket?: WebSocketConstructor;
  /** Uniform random numbers in [0, 1): backoff jitter and the `clientMessageId` prefix. Default `Math.random`. */
  random?: () => number;
  /** The clock and timers. Default: `Date.now` and the global timers. */
  clock?: Partial<Clock>;
  /** Bound of the first reconnect delay, doubled each failed attempt. Default 100. */
  backoffBaseMs?: number;
  /** Largest reconnect delay bound. Default 10000. */
  backoffMaxMs?: number;
  /** An attempt not authenticated after this long is given up. Default 10000. */
  connectTimeoutMs?: number;
  /** After this long without a frame from the server the client sends `PING`. Default 25000. */
  heartbeatIntervalMs?: number;
  /** After this long without a frame the connection is dropped and the client reconnects. Default 40000. */
  idleTimeoutMs?: number;
  /** Refresh the token on the open connection before it expires. Default true. */
  autoRefresh?: boolean;
  /**
   * Refresh this long before the token's `exp`, or halfway through its
   * remaining life when that is later. Default 60000.
   */
  refreshMarginMs?: number;
  /** `createRoom`, `listRooms`, `history` and `ping` reject with `TIMEOUT` after this long. Default 30000. */
  requestTimeoutMs?: number;
  /** Most unacknowledged messages kept for resending; `send` past it rejects with `OUTBOX_FULL`. Default 1000. */
  outboxMax?: number;
  /** Most sends in flight at once (one at a time after a rate limit). Default 4. */
  sendWindow?: number;
  /** The server's `MAX_MESSAGE_BYTES`: a larger send rejects with `MESSAGE_TOO_BIG` at once. Default 65536. */
  maxMessageBytes?: number;
  /** While the user keeps typing, `isTyping: true` is sent again after this long. Default 3000. */
  typingRenewMs?: number;
  /** After this long without a `typing()` call, typing stops by itself. Default 3000. */
  typingIdleMs?: number;
  /** `close()` waits this long for the server's close frame. Default 1000. */
  closeTimeoutMs?: number;
}

/** A gap: the server could not give back everything missed in a room. */
export interface GapEvent {
  roomId: string;
  /** The room's epoch now. */
  epoch: string;
  /** The epoch the client was in before (null if none). */
  previousEpoch: string | null;
  /** The last `seq` delivered in `previousEpoch`. */
  lastSeq: number;
  /** True when the sequence started afresh (server restart), false when history was evicted. */
  epochChanged: boolean;
  /** The first `seq` the server still had (null when it returned none). */
  firstSeq: number | null;
}

/** The events of a {@link ChatClient}, by name. */
export interface ChatClientEvents {
  /** The connection state changed. */
  state: ClientState;
  /** A connection attempt starts (`attempt`: failed attempts since the last authentication). */
  connecting: { attempt: number };
  /** A WebSocket is open; `AUTHENTICATE` goes out. */
  connected: { attempt: number };
  /** The server accepted a token: on a new connection (`refreshed: false`) or a refresh on the open one. */
  authenticated: { userId: string; username: string; status: string; refreshed: boolean };
  /** The connection ended; the next attempt is in `delayMs`. `code` is the close code (null when none). */
  disconnected: { code: number | null; reason: string; delayMs: number };
  /** The client stopped for good: `reason` is `closed` (by `close()`) or `token-refused`. */
  closed: { reason: 'closed' | 'token-refused'; error: ChatClientError | null };
  /** A room was joined, re-joined after a reconnect, or created. */
  joined: { roomId: string; room: Room; epoch: string; recovered: boolean | undefined; users: UserRef[] };
  /** Messages may be missing before the next `message` of the room. */
  gap: GapEvent;
  /** A new message in a joined room: each exactly once, in `seq` order per room and epoch. */
  message: DeliveredMessage;
  /** One of this client's messages is stored. */
  ack: { clientMessageId: string; roomId: string; seq: number; id: string; message: DeliveredMessage };
  /** One of this client's messages will not be sent (the server refused it, or the outbox is full). */
  sendFailed: { clientMessageId: string; roomId: string; code: string; error: ChatClientError };
  /** The client is no longer in a room it had joined: `requested` by `leave()`, `revoked` by the server, or the re-join was `rejected`. */
  left: { roomId: string; reason: 'requested' | 'revoked' | 'rejected'; error?: ChatClientError };
  /** Another user's first connection joined a room. */
  userJoined: { roomId: string; user: UserRef };
  /** A user's last connection left a room. */
  userLeft: { roomId: string; userId: string; username: string };
  /** Another user started or stopped typing. */
  typing: { roomId: string; userId: string; username: string; isTyping: boolean };
  /** The server refused a request for its rate limit; the client retries it after `retryAfterMs`. */
  rateLimited: { requestType: string | null; retryAfterMs: number | null };
  /** An `ERROR` that answers no request of this client (e.g. "token expired"). */
  serverError: ChatClientError;
  /** Anything else that went wrong (a token callback failed, a refresh was refused, a listener threw). */
  error: ChatClientError;
  /** Every frame from the server, parsed, before the client acts on it. */
  frame: { type: string; payload?: unknown; requestId?: string };
}

/**
 * The error promises reject with. `code` is the server's error code
 * (`NOT_A_MEMBER`, `FORBIDDEN`, `ROOM_NOT_FOUND`, …) or the client's own:
 * `CLOSED`, `DISCONNECTED`, `TIMEOUT`, `OUTBOX_FULL`, `MESSAGE_TOO_BIG`,
 * `LEFT`, `TOKEN_REFUSED`, `TOKEN_ERROR`, `CONNECT_ERROR`, `LISTENER_ERROR`.
 */
export class ChatClientError extends Error {
  constructor(code: string, message: string, details?: { requestId?: string; retryAfterMs?: number; cause?: unknown });
  readonly code: string;
  /** The `requestId` of the request the server refused. */
  readonly requestId?: string;
  /** The server's `retryAfterMs`, when it gave one. */
  readonly retryAfterMs?: number;
}

/**
 * A Chat Flow client that survives disconnects: it reconnects with
 * exponential backoff and full jitter, authenticates with a fresh token
 * each time, resumes every joined room with `sinceSeq` + `epoch` and
 * delivers each message once, in `seq` order; it resends every
 * unacknowledged message with its `clientMessageId` until the server
 * stores it.
 */
export class ChatClient {
  /** Creates a client; nothing happens until {@link connect}. */
  constructor(options: ChatClientOptions);

  /** The connection state. */
  readonly state: ClientState;
  /** The authenticated user's id (null before the first authentication). */
  readonly userId: string | null;
  /** The name the connection goes by (null before the first authentication). */
  readonly username: string | null;
  /** The rooms the client stays in across reconnects. */
  readonly rooms: string[];
  /** Messages waiting for their acknowledgement. */
  readonly outboxSize: number;

  /** Where the client is in `roomId`, or undefined if it does not stay in it. */
  room(roomId: string): RoomCursor | undefined;

  /**
   * Starts connecting (and reconnecting, until {@link close}). Resolves at
   * the first authentication; rejects if the client closes before.
   */
  connect(): Promise<{ userId: string; username: string }>;

  /**
   * Ends everything: closes the connection (1000), stops every timer, and
   * rejects what is still pending with `CLOSED`. Resolves when the socket
   * is closed.
   */
  close(): Promise<void>;

  /**
   * Joins `roomId` and stays in it across reconnects. Resolves with the
   * `ROOM_JOINED` reply (waiting for a connection if there is none);
   * rejects with the server's error (`ROOM_NOT_FOUND`, `FORBIDDEN`, …), or
   * `LEFT` if {@link leave} was called first.
   */
  join(roomId: string): Promise<JoinResult>;

  /**
   * Leaves `roomId` and forgets where the client was in it. Resolves when
   * the server confirms, or at once when not connected (a disconnected
   * client is in no room, and will not re-join this one).
   */
  leave(roomId: string): Promise<void>;

  /** Creates a room; the creator is joined to it at once (and stays). */
  createRoom(options: { name: string; description?: string; type?: 'public' | 'private'; id?: string }): Promise<CreateRoomResult>;

  /** The rooms this user may join. */
  listRooms(): Promise<Room[]>;

  /** A page of a joined room's history: the newest `limit` messages before `beforeSeq`. */
  history(roomId: string, options?: { beforeSeq?: number; limit?: number }): Promise<HistoryPage>;

  /** An application-level `PING`; resolves with the round-trip time in milliseconds. */
  ping(): Promise<number>;

  /**
   * Sends a message. It gets a `clientMessageId` (unless given) and stays in
   * the outbox, resent after every reconnect, until the server stores it:
   * then the promise resolves with the stored message. Rejects with the
   * server's error (`NOT_A_MEMBER`, `INVALID_MESSAGE`, …), `OUTBOX_FULL`,
   * `MESSAGE_TOO_BIG` or `CLOSED`. Rate-limited sends wait `retryAfterMs`
   * and go again.
   */
  send(roomId: string, content: string, options?: { type?: 'text' | 'emote'; clientMessageId?: string }): Promise<DeliveredMessage>;

  /**
   * Call on every keystroke: tells the room the user is typing, renews it
   * while the user goes on, and stops by itself after `typingIdleMs` without
   * a call (sending a message or leaving stops it too). Ignored while not
   * connected or not in the room.
   */
  typing(roomId: string): void;

  /** Stops the typing indicator in `roomId` now. */
  stopTyping(roomId: string): void;

  /**
   * Asks the token callback for a token now and authenticates the open
   * connection with it (the client does this by itself before expiry).
   * Resolves when the server accepted it, at once when the callback gave
   * the current token again, or at the next authentication when not
   * connected; rejects with the server's error if it refused the token.
   */
  refreshToken(): Promise<void>;

  /** Adds a listener; returns a function that removes it. */
  on<E extends keyof ChatClientEvents>(event: E, listener: (value: ChatClientEvents[E]) => void): () => void;
  /** Removes a listener. */
  off<E extends keyof ChatClientEvents>(event: E, listener: (value: ChatClientEvents[E]) => void): void;
  /** Adds a listener called once; returns a function that removes it. */
  once<E extends keyof ChatClientEvents>(event: E, listener: (value: ChatClientEvents[E]) => void): () => void;
}

/**
 * Full-jitter backoff: a whole number of milliseconds, uniform in
 * `[0, min(maxMs, baseMs * 2^attempt)]`.
 */
export function backoffDelay(random: () => number, attempt: number, baseMs: number, maxMs: number): number;

/**
 * A JWT's expiry (its `exp` claim) in Unix milliseconds, read without
 * verification; null when the token is not a JWT or has no `exp`.
 */
export function tokenExpiresAt(token: string): number | null;
