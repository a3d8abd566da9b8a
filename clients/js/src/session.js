/**
 * What the client remembers across connections, with no I/O and no timers
 * (the counterpart of the Rust client's `state.rs`): the rooms it stays in
 * and where it is in each (`Rooms`), and the sends not yet acknowledged
 * (`Outbox`). The connection logic in `client.js` feeds them server frames
 * and writes what they say may go.
 */

/**
 * The rooms the application wants to be in, each with its cursor: the epoch
 * of the sequence the client is in and the highest `seq` it has delivered in
 * that epoch (0: none yet).
 */
export class Rooms {
  /** @type {Map<string, { epoch: string | null, lastSeq: number }>} */
  #cursors = new Map();

  /** Stays in `roomId` across reconnects (a new room starts with no cursor). */
  want(roomId) {
    if (!this.#cursors.has(roomId)) this.#cursors.set(roomId, { epoch: null, lastSeq: 0 });
  }

  /** A room the user just created: its sequence starts empty in `epoch`. */
  created(roomId, epoch) {
    this.#cursors.set(roomId, { epoch, lastSeq: 0 });
  }

  /** Forgets `roomId` and where the client was in it. */
  forget(roomId) {
    this.#cursors.delete(roomId);
  }

  /** Whether the application wants to be in `roomId`. */
  has(roomId) {
    return this.#cursors.has(roomId);
  }

  /** The wanted rooms, in the order they were first wanted. */
  ids() {
    return [...this.#cursors.keys()];
  }

  /** A copy of the cursor of `roomId`, or undefined. */
  cursor(roomId) {
    const c = this.#cursors.get(roomId);
    return c === undefined ? undefined : { epoch: c.epoch, lastSeq: c.lastSeq };
  }

  /**
   * The `JOIN_ROOM` payload that resumes `roomId` where the client left it:
   * `sinceSeq` + `epoch` once the client knows the room's epoch, a plain
   * join before that.
   */
  joinPayload(roomId) {
    const c = this.#cursors.get(roomId);
    if (c === undefined || c.epoch === null) return { roomId };
    return { roomId, sinceSeq: c.lastSeq, epoch: c.epoch };
  }

  /**
   * Applies a `ROOM_JOINED` payload of a wanted room. A new epoch resets the
   * cursor (nothing of that sequence was delivered yet); `recovered: false`
   * makes a gap report; the listed messages not delivered yet are returned
   * to be delivered, each once, in `seq` order.
   *
   * @returns {{ gap: object | null, deliver: object[] } | null} null when the
   *   room is not wanted (left meanwhile)
   */
  joined(payload) {
    const roomId = payload.room.id;
    const c = this.#cursors.get(roomId);
    if (c === undefined) return null;
    const previousEpoch = c.epoch;
    const lastSeq = c.lastSeq;
    if (c.epoch !== payload.epoch) {
      c.epoch = payload.epoch;
      c.lastSeq = 0;
    }
    const messages = Array.isArray(payload.messages) ? payload.messages : [];
    let gap = null;
    if (payload.recovered === false) {
      gap = {
        roomId,
        epoch: payload.epoch,
        previousEpoch,
        lastSeq,
        epochChanged: previousEpoch !== payload.epoch,
        firstSeq: messages.length > 0 ? messages[0].seq : null,
      };
    }
    const deliver = [];
    for (const m of messages) {
      const d = this.accept(m);
      if (d !== null) deliver.push(d);
    }
    return { gap, deliver };
  }

  /**
   * Whether `message` is new to the application: in a wanted room whose
   * epoch is known, above the last delivered `seq`. Advances the cursor and
   * returns the message with the room's `epoch` added; null otherwise.
   */
  accept(message) {
    const c = this.#cursors.get(message.roomId);
    if (c === undefined || c.epoch === null) return null;
    if (!(message.seq > c.lastSeq)) return null;
    c.lastSeq = message.seq;
    return { ...message, epoch: c.epoch };
  }
}

/**
 * Sends not yet acknowledged, oldest first. At most `window` are in flight
 * on a connection (one while `careful`, after a rate-limit rejection, until
 * the next acknowledgement); none goes before `gateUntil` (the server's
 * `retryAfterMs`: the send bucket is per user, so one rejection holds every
 * send back) nor before its own `notBefore`. Within a room, a send that may
 * not go yet holds back the later ones, so that a room's messages are sent
 * in the order the application sent them.
 */
export class Outbox {
  /** @type {object[]} */
  items = [];
  careful = false;
  gateUntil = 0;

  /**
   * @param {number} max most unacknowledged sends kept
   * @param {number} window most sends in flight at once
   */
  constructor(max, window) {
    this.max = max;
    this.window = window;
  }

  get size() {
    return this.items.length;
  }

  get full() {
    return this.items.length >= this.max;
  }

  /** Queues `item` ({ roomId, clientMessageId, … }). */
  add(item) {
    item.inFlight = false;
    item.notBefore = 0;
    this.items.push(item);
  }

  /** The queued send with `clientMessageId` in `roomId`, or undefined. */
  find(clientMessageId, roomId) {
    return this.items.find((i) => i.clientMessageId === clientMessageId && i.roomId === roomId);
  }

  /** Whether `item` is still queued. */
  contains(item) {
    return this.items.includes(item);
  }

  /** Removes `item` (acknowledged or given up). */
  remove(item) {
    const i = this.items.indexOf(item);
    if (i >= 0) this.items.splice(i, 1);
  }

  /** `item` is stored: it leaves the queue and the window opens again. */
  acked(item) {
    this.remove(item);
    this.careful = false;
  }

  /**
   * `item` was refused for now: it goes again after `delayMs`, and, for a
   * rate limit (`gate`), so does every other send, one at a time.
   */
  retryLater(item, now, delayMs, gate) {
    item.inFlight = false;
    if (gate) {
      this.gateUntil = Math.max(this.gateUntil, now + delayMs);
      this.careful = true;
    } else {
      item.notBefore = now + delayMs;
    }
  }

  /** The connection is gone: nothing is in flight any more. */
  connectionLost() {
    for (const item of this.items) item.inFlight = false;
  }

  #window() {
    return this.careful ? 1 : this.window;
  }

  /**
   * The sends that may go now, marked in flight. `ready(roomId)` says
   * whether the room's sends may go on this connection (the room is joined
   * on it, or not one the client joins at all).
   */
  sendable(now, ready) {
    let inFlight = this.items.filter((i) => i.inFlight).length;
    const out = [];
    if (now < this.gateUntil) return out;
    const held = new Set();
    for (const item of this.items) {
      if (inFlight >= this.#window()) break;
      if (item.inFlight || held.has(item.roomId)) continue;
      if (now < item.notBefore || !ready(item.roomId)) {
        held.add(item.roomId);
        continue;
      }
      item.inFlight = true;
      out.push(item);
      inFlight += 1;
    }
    return out;
  }

  /**
   * When a held-back send becomes due (null when none waits on the clock,
   * or the window is full: a reply opens it).
   */
  nextDue(ready) {
    if (this.items.filter((i) => i.inFlight).length >= this.#window()) return null;
    let due = null;
    // Only the first waiting send of each room can become due by itself.
    const seen = new Set();
    for (const item of this.items) {
      if (item.inFlight || seen.has(item.roomId)) continue;
      seen.add(item.roomId);
      if (!ready(item.roomId)) continue;
      const at = Math.max(this.gateUntil, item.notBefore);
      if (due === null || at < due) due = at;
    }
    return due;
  }
}
