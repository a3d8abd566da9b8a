// The Chat Flow demo page: a small chat UI over the `chat-flow-client`
// package (served by the server at /demo/client/, the very files of
// clients/js/src). No framework, no build step, no inline code: the page's
// Content-Security-Policy allows scripts and styles from this origin only.
//
// What is shown comes from the client's events: `message` (each message
// once, in seq order, across reconnects), `joined`/`gap`/`left`, presence
// (`userJoined`, `userLeft`), `typing`, and the connection's `state`. The
// page renders what the client delivers as it delivers it (it does not
// de-duplicate or sort live messages), so that its browser test sees the
// client's guarantees, not the page's.

import { ChatClient } from './client/index.js';

/** Messages a room opens on; older ones come a page at a time (GET_HISTORY). */
const PAGE = 25;
/** Most messages kept per room; past it the oldest go (and can be paged back). */
const KEPT_MAX = 500;
/** A typing indicator not renewed for this long is dropped (the server also ends it). */
const TYPING_SHOWN_MS = 8000;
const USERNAME_KEY = 'chat-flow-demo.username';

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $('connection'),
  connectionText: $('connection-text'),
  whoami: $('whoami'),
  whoamiName: $('whoami-name'),
  signOut: $('sign-out'),
  signIn: $('sign-in'),
  signInHint: $('sign-in-hint'),
  signInForm: $('sign-in-form'),
  signInButton: $('sign-in-button'),
  signInError: $('sign-in-error'),
  username: $('username'),
  tokenField: $('token-field'),
  token: $('token'),
  chat: $('chat'),
  roomList: $('room-list'),
  refreshRooms: $('refresh-rooms'),
  createRoomForm: $('create-room-form'),
  newRoomName: $('new-room-name'),
  newRoomPrivate: $('new-room-private'),
  joinRoomForm: $('join-room-form'),
  joinRoomId: $('join-room-id'),
  roomsError: $('rooms-error'),
  noRoom: $('no-room'),
  roomView: $('room-view'),
  roomName: $('room-name'),
  roomMeta: $('room-meta'),
  leaveRoom: $('leave-room'),
  messages: $('messages'),
  loadOlder: $('load-older'),
  messageList: $('message-list'),
  typing: $('typing'),
  composer: $('composer'),
  messageInput: $('message-input'),
  roomError: $('room-error'),
  memberList: $('member-list'),
  memberCount: $('member-count'),
};

/** How this server signs people in, from /demo/config.json. */
let serverConfig = { devTokens: false, maxContentLength: 4000 };

/** The signed-in session, or null. */
let session = null;

// ------------------------------------------------------------- helpers ----

/** The contract's username rule (1-32 characters, no control characters), not blank. */
function usernameProblem(name) {
  const chars = [...name];
  if (chars.length === 0 || name.trim() === '') return 'Choose a username.';
  if (chars.length > 32) return 'A username has at most 32 characters.';
  if (/\p{Cc}/u.test(name)) return 'A username cannot hold control characters.';
  return null;
}

function show(element, visible) {
  element.hidden = !visible;
}

function showError(element, message) {
  element.textContent = message ?? '';
  show(element, Boolean(message));
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Random ids that work outside secure contexts too (no crypto.randomUUID). */
function randomId(length = 10) {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

function timeOf(timestamp) {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function describeError(error) {
  if (error === null || error === undefined) return 'unknown error';
  const code = typeof error.code === 'string' ? `${error.code}: ` : '';
  return `${code}${error.message ?? String(error)}`;
}

/** A development token for `username` from this server (POST /demo/token). */
async function fetchDevToken(username) {
  let response;
  try {
    response = await fetch('/demo/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username }),
      cache: 'no-store',
    });
  } catch (error) {
    throw new Error(`the server cannot be reached (${error.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status says enough.
  }
  if (!response.ok || typeof body?.token !== 'string') {
    const error = new Error(body?.error ?? `the server answered ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body.token;
}

// ------------------------------------------------------------- session ----

/**
 * One signed-in user: the client, the rooms it is in (each with its
 * messages, members and typing users), and what the page shows.
 */
class Session {
  constructor(client, username) {
    this.client = client;
    this.username = username;
    this.userId = null;
    /** @type {Map<string, object>} roomId → room state */
    this.rooms = new Map();
    /** Rooms from the last LIST_ROOMS. */
    this.listed = [];
    this.active = null;
    /** Whether a connection was ever authenticated (then a loss is a reconnect). */
    this.everOpen = false;
    /** Rooms still to be re-joined after the connection (re)opened. */
    this.resuming = new Set();
    this.retryInMs = null;
    this.lastProblem = null;
    this.cmidPrefix = randomId(8);
    this.nextCmid = 0;
    this.renderQueued = false;
  }

  room(roomId) {
    let room = this.rooms.get(roomId);
    if (room === undefined) {
      room = {
        id: roomId,
        info: null,
        joined: false,
        /** One per epoch the page saw, oldest first: { epoch, messages, gapsBefore, restarted }. */
        segments: [],
        hasMore: false,
        loadingOlder: false,
        /** Sends not acknowledged yet: clientMessageId → { content, type, failed }. */
        pending: new Map(),
        /** userId → username */
        members: new Map(),
        /** userId → { username, timer } */
        typing: new Map(),
        unread: 0,
      };
      this.rooms.set(roomId, room);
    }
    return room;
  }

  /** Re-renders once, after the current burst of events. */
  render() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      if (session === this) renderAll(this);
    });
  }
}

function wire(s) {
  const { client } = s;
  client.on('state', () => {
    if (client.state === 'open') {
      s.everOpen = true;
      s.retryInMs = null;
      s.resuming = new Set(client.rooms);
    }
    s.render();
  });
  client.on('disconnected', (d) => {
    s.retryInMs = d.delayMs;
    s.lastProblem = d.code === null ? d.reason : `closed ${d.code}${d.reason ? ` (${d.reason})` : ''}`;
    // Presence is the server's to say again once the room is re-joined.
    for (const room of s.rooms.values()) {
      room.joined = false;
      room.members.clear();
      clearTyping(room);
    }
    s.render();
  });
  client.on('authenticated', (a) => {
    s.userId = a.userId;
    s.username = a.username;
    if (!a.refreshed) refreshRoomList(s);
    s.render();
  });
  client.on('joined', (j) => {
    const room = s.room(j.roomId);
    room.info = j.room;
    room.joined = true;
    room.members = new Map(j.users.map((u) => [u.userId, u.username]));
    clearTyping(room);
    const current = room.segments.at(-1);
    if (current === undefined || current.epoch !== j.epoch) {
      const segment = { epoch: j.epoch, messages: [], gapsBefore: new Set(), restarted: current !== undefined };
      room.segments.push(segment);
      room.hasMore = false;
      // The client delivers the join's messages right after this event, in
      // the same task: once they are in, keep the newest PAGE of them and
      // leave the older ones to "Load older messages" (GET_HISTORY).
      queueMicrotask(() => {
        if (segment.messages.length > PAGE) {
          segment.messages.splice(0, segment.messages.length - PAGE);
          room.hasMore = true;
          s.render();
        }
      });
    }
    s.resuming.delete(j.roomId);
    s.render();
  });
  client.on('gap', (g) => {
    const room = s.rooms.get(g.roomId);
    const segment = room?.segments.at(-1);
    if (segment === undefined) return;
    // A new epoch already has its own segment (marked `restarted`); within
    // one, messages after lastSeq could not be recovered.
    if (!g.epochChanged && g.firstSeq !== null) segment.gapsBefore.add(g.firstSeq);
    s.render();
  });
  client.on('message', (m) => {
    const room = s.rooms.get(m.roomId);
    if (room === undefined) return;
    let segment = room.segments.at(-1);
    if (segment === undefined || segment.epoch !== m.epoch) {
      segment = { epoch: m.epoch, messages: [], gapsBefore: new Set(), restarted: segment !== undefined };
      room.segments.push(segment);
    }
    segment.messages.push(m);
    if (segment.messages.length > KEPT_MAX) {
      segment.messages.splice(0, segment.messages.length - KEPT_MAX);
      room.hasMore = true;
    }
    if (typeof m.clientMessageId === 'string' && m.userId === s.userId) room.pending.delete(m.clientMessageId);
    if (s.active !== m.roomId) room.unread += 1;
    s.render();
  });
  client.on('ack', (a) => {
    s.rooms.get(a.roomId)?.pending.delete(a.clientMessageId);
    s.render();
  });
  client.on('sendFailed', (f) => {
    const pending = s.rooms.get(f.roomId)?.pending.get(f.clientMessageId);
    if (pending !== undefined) pending.failed = describeError(f.error);
    s.render();
  });
  client.on('left', (l) => {
    const room = s.rooms.get(l.roomId);
    s.rooms.delete(l.roomId);
    s.resuming.delete(l.roomId);
    if (room !== undefined) clearTyping(room);
    if (s.active === l.roomId) s.active = null;
    if (l.reason !== 'requested') {
      const name = room?.info?.name ?? l.roomId;
      let why = describeError(l.error);
      if (l.reason === 'revoked') why = 'your token no longer grants it';
      else if (l.error?.code === 'ROOM_NOT_FOUND') why = 'it no longer exists (a restart forgets the rooms created since the last one)';
      showError(ui.roomsError, `You are no longer in ${name}: ${why}.`);
    }
    refreshRoomList(s);
    s.render();
  });
  client.on('userJoined', (p) => {
    const room = s.rooms.get(p.roomId);
    if (room === undefined || p.user === undefined) return;
    room.members.set(p.user.userId, p.user.username);
    s.render();
  });
  client.on('userLeft', (p) => {
    const room = s.rooms.get(p.roomId);
    if (room === undefined) return;
    room.members.delete(p.userId);
    stopTypingOf(room, p.userId);
    s.render();
  });
  client.on('typing', (t) => {
    const room = s.rooms.get(t.roomId);
    if (room === undefined || t.userId === s.userId) return;
    stopTypingOf(room, t.userId);
    if (t.isTyping) {
      const timer = setTimeout(() => {
        room.typing.delete(t.userId);
        s.render();
      }, TYPING_SHOWN_MS);
      room.typing.set(t.userId, { username: t.username, timer });
    }
    s.render();
  });
  client.on('serverError', (e) => {
    s.lastProblem = describeError(e);
    showError(ui.roomError, describeError(e));
  });
  client.on('error', (e) => {
    s.lastProblem = describeError(e);
    s.render();
  });
  client.on('closed', (c) => {
    if (session !== s) return;
    if (c.reason === 'token-refused') {
      endSession(`The server refused the token${c.error ? ` (${describeError(c.error)})` : ''}. Sign in again.`);
    }
  });
}

function stopTypingOf(room, userId) {
  const t = room.typing.get(userId);
  if (t !== undefined) clearTimeout(t.timer);
  room.typing.delete(userId);
}

function clearTyping(room) {
  for (const userId of [...room.typing.keys()]) stopTypingOf(room, userId);
}

async function refreshRoomList(s) {
  try {
    const rooms = await s.client.listRooms();
    if (session !== s) return;
    s.listed = rooms;
    s.render();
  } catch (error) {
    if (session === s && error?.code !== 'CLOSED') showError(ui.roomsError, `Cannot list the rooms: ${describeError(error)}`);
  }
}

// ---------------------------------------------------------- rendering ----

function renderAll(s) {
  renderConnection(s);
  renderRoomList(s);
  renderRoom(s);
}

function connectionPhase(s) {
  if (s === null) return 'signed-out';
  const state = s.client.state;
  if (state === 'closed') return 'closed';
  if (state === 'open') return s.resuming.size > 0 ? 'resuming' : 'connected';
  return s.everOpen ? 'reconnecting' : 'connecting';
}

function renderConnection(s) {
  const phase = connectionPhase(s);
  ui.connection.dataset.state = phase;
  let text = phase;
  if (phase === 'connecting') text = 'connecting…';
  if (phase === 'reconnecting') {
    text = s.retryInMs !== null && s.retryInMs >= 1000 ? `reconnecting (retry in ${Math.round(s.retryInMs / 1000)} s)…` : 'reconnecting…';
  }
  if (phase === 'resuming') text = `resuming ${s.resuming.size} room${s.resuming.size === 1 ? '' : 's'}…`;
  if (phase === 'closed') text = 'disconnected';
  if (phase === 'signed-out') text = 'signed out';
  ui.connectionText.textContent = text;
  ui.connection.title = s?.lastProblem ? `last problem: ${s.lastProblem}` : '';
  show(ui.whoami, s !== null);
  ui.whoamiName.textContent = s?.username ?? '';
}

function renderRoomList(s) {
  const entries = new Map();
  for (const info of s.listed) entries.set(info.id, info);
  for (const room of s.rooms.values()) if (room.info !== null) entries.set(room.id, room.info);
  const sorted = [...entries.values()].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  const items = sorted.map((info) => {
    const room = s.rooms.get(info.id);
    const li = el('li');
    const button = el('button', 'room-button');
    button.type = 'button';
    button.dataset.roomId = info.id;
    if (s.active === info.id) button.setAttribute('aria-current', 'true');
    if (room?.joined) button.classList.add('joined');
    button.append(el('span', 'room-name', info.name));
    if (info.type === 'private') button.append(el('span', 'badge', 'private'));
    if (room !== undefined && room.unread > 0) button.append(el('span', 'badge unread', String(room.unread)));
    let status = `${info.memberCount} online`;
    if (room !== undefined) status = room.joined ? 'joined' : room.segments.length > 0 ? 'rejoining…' : 'joining…';
    button.append(el('span', 'muted small room-count', status));
    button.addEventListener('click', () => openRoom(s, info.id));
    li.append(button);
    return li;
  });
  ui.roomList.replaceChildren(...items);
  if (items.length === 0) ui.roomList.append(el('li', 'muted small', 'No rooms yet.'));
}

function messageItem(s, m) {
  const mine = m.userId === s.userId;
  const li = el('li', `msg${mine ? ' mine' : ''}${m.type === 'emote' ? ' emote' : ''}`);
  li.dataset.seq = String(m.seq);
  li.dataset.epoch = m.epoch;
  li.dataset.id = m.id;
  const meta = el('div', 'meta');
  meta.append(el('span', 'author', m.username));
  const time = el('time', 'muted small', timeOf(m.timestamp));
  time.dateTime = m.timestamp;
  meta.append(time, el('span', 'muted small seq', `#${m.seq}`));
  li.append(meta, el('div', 'content', m.type === 'emote' ? `* ${m.username} ${m.content}` : m.content));
  return li;
}

function renderRoom(s) {
  const room = s.active === null ? undefined : s.rooms.get(s.active);
  show(ui.noRoom, room === undefined);
  show(ui.roomView, room !== undefined);
  if (room === undefined) {
    ui.memberList.replaceChildren();
    ui.memberCount.textContent = '';
    return;
  }
  room.unread = 0;
  const info = room.info;
  ui.roomName.textContent = info?.name ?? room.id;
  const kind = info?.type === 'private' ? 'private room' : 'public room';
  ui.roomMeta.textContent = `${kind} · id ${room.id}${info?.description ? ` · ${info.description}` : ''}${room.joined ? '' : ' · rejoining…'}`;

  const box = ui.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;

  const items = [];
  room.segments.forEach((segment, index) => {
    if (segment.restarted && index > 0) {
      items.push(el('li', 'divider', 'The server restarted: a new sequence of messages starts here.'));
    }
    for (const m of segment.messages) {
      if (segment.gapsBefore.has(m.seq)) items.push(el('li', 'divider', 'Some messages here could not be recovered.'));
      items.push(messageItem(s, m));
    }
  });
  for (const [cmid, p] of room.pending) {
    const li = el('li', `msg mine pending${p.failed ? ' failed' : ''}`);
    li.dataset.cmid = cmid;
    const meta = el('div', 'meta');
    meta.append(el('span', 'author', s.username ?? ''), el('span', 'muted small status', p.failed ? `not sent: ${p.failed}` : 'sending…'));
    li.append(meta, el('div', 'content', p.type === 'emote' ? `* ${s.username} ${p.content}` : p.content));
    items.push(li);
  }
  ui.messageList.replaceChildren(...items);
  show(ui.loadOlder, room.hasMore);
  ui.loadOlder.disabled = room.loadingOlder;
  ui.loadOlder.textContent = room.loadingOlder ? 'Loading…' : 'Load older messages';
  box.scrollTop = atBottom ? box.scrollHeight : box.scrollHeight - fromBottom;

  const typing = [...room.typing.values()].map((t) => t.username);
  if (typing.length === 0) ui.typing.textContent = '';
  else if (typing.length === 1) ui.typing.textContent = `${typing[0]} is typing…`;
  else if (typing.length === 2) ui.typing.textContent = `${typing[0]} and ${typing[1]} are typing…`;
  else ui.typing.textContent = `${typing.length} people are typing…`;

  const members = [...room.members.entries()].sort((a, b) => a[1].localeCompare(b[1]) || a[0].localeCompare(b[0]));
  ui.memberList.replaceChildren(
    ...members.map(([userId, username]) => {
      const li = el('li', 'member', username);
      li.dataset.userId = userId;
      if (userId === s.userId) li.append(el('span', 'muted small', ' (you)'));
      if (room.typing.has(userId)) li.append(el('span', 'muted small', ' typing…'));
      return li;
    }),
  );
  if (!room.joined) ui.memberList.replaceChildren(el('li', 'muted small', 'back once the room is re-joined'));
  ui.memberCount.textContent = room.members.size > 0 ? `(${room.members.size})` : '';
}

// ------------------------------------------------------------- actions ----

async function openRoom(s, roomId) {
  showError(ui.roomsError, null);
  showError(ui.roomError, null);
  const room = s.rooms.get(roomId);
  if (room === undefined || !s.client.rooms.includes(roomId)) {
    s.room(roomId);
    s.active = roomId;
    s.render();
    try {
      await s.client.join(roomId);
    } catch (error) {
      if (session !== s) return;
      s.rooms.delete(roomId);
      if (s.active === roomId) s.active = null;
      showError(ui.roomsError, `Cannot join ${roomId}: ${describeError(error)}`);
      s.render();
      return;
    }
  }
  s.active = roomId;
  s.render();
  ui.messageInput.focus();
}

async function loadOlder(s, roomId) {
  const room = s.rooms.get(roomId);
  const segment = room?.segments.at(-1);
  if (room === undefined || segment === undefined || room.loadingOlder) return;
  const beforeSeq = segment.messages[0]?.seq;
  room.loadingOlder = true;
  s.render();
  try {
    const page = await s.client.history(roomId, { beforeSeq, limit: PAGE });
    // Only into the sequence it was asked for (the room may have restarted since).
    if (room.segments.at(-1) === segment && s.client.room(roomId)?.epoch === segment.epoch) {
      const older = page.messages
        .filter((m) => beforeSeq === undefined || m.seq < beforeSeq)
        .map((m) => ({ ...m, epoch: segment.epoch }));
      segment.messages.unshift(...older);
      room.hasMore = page.hasMore;
    }
  } catch (error) {
    if (session === s) showError(ui.roomError, `Cannot load older messages: ${describeError(error)}`);
  } finally {
    room.loadingOlder = false;
    s.render();
  }
}

function send(s, roomId, text) {
  const room = s.rooms.get(roomId);
  if (room === undefined) return;
  let content = text;
  let type = 'text';
  if (content.startsWith('/me ')) {
    content = content.slice(4);
    type = 'emote';
  }
  if (content.trim() === '') return;
  const clientMessageId = `${s.cmidPrefix}-${++s.nextCmid}`;
  room.pending.set(clientMessageId, { content, type, failed: null });
  // Failures come as `sendFailed` events too.
  s.client.send(roomId, content, { type, clientMessageId }).catch(() => {});
  s.render();
}

async function createRoom(s, name, isPrivate) {
  showError(ui.roomsError, null);
  try {
    const created = await s.client.createRoom({ name, type: isPrivate ? 'private' : 'public' });
    if (session !== s) return;
    s.active = created.room.id;
    refreshRoomList(s);
    s.render();
    ui.messageInput.focus();
    return true;
  } catch (error) {
    if (session === s) showError(ui.roomsError, `Cannot create the room: ${describeError(error)}`);
    return false;
  }
}

async function leaveRoom(s, roomId) {
  showError(ui.roomError, null);
  s.client.stopTyping(roomId);
  try {
    await s.client.leave(roomId);
  } catch (error) {
    if (session === s) showError(ui.roomError, `Cannot leave: ${describeError(error)}`);
    return;
  }
  // The `left` event has forgotten the room and refreshes the list.
  s.rooms.delete(roomId);
  if (s.active === roomId) s.active = null;
  s.render();
}

// -------------------------------------------------------------- sign-in ----

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

async function signIn() {
  showError(ui.signInError, null);
  const username = ui.username.value.trim();
  const pasted = ui.token.value.trim();
  const problem = serverConfig.devTokens || username !== '' ? usernameProblem(username) : null;
  if (problem !== null) {
    showError(ui.signInError, problem);
    ui.username.focus();
    return;
  }
  if (!serverConfig.devTokens && pasted === '') {
    showError(ui.signInError, 'Paste a token.');
    ui.token.focus();
    return;
  }
  ui.signInButton.disabled = true;
  let token;
  try {
    // The first token is asked for here, so that a refused name is said
    // next to the field rather than as a failed connection.
    token = serverConfig.devTokens ? await fetchDevToken(username) : pasted;
  } catch (error) {
    showError(ui.signInError, `No token: ${error.message}`);
    ui.signInButton.disabled = false;
    return;
  }
  let first = token;
  const client = new ChatClient({
    url: wsUrl(),
    // Called on every (re)connect and before the token expires.
    token: serverConfig.devTokens
      ? async () => {
          if (first !== null) {
            const t = first;
            first = null;
            return t;
          }
          try {
            return await fetchDevToken(username);
          } catch (error) {
            // 404: reconfigured (a JWT_SECRET, or DEMO_PAGE off) since sign-in.
            if (error.status === 404 && session?.client === client) {
              queueMicrotask(() => endSession('This server no longer hands out development tokens. Reload the page.'));
            }
            throw error;
          }
        }
      : token,
    username: username === '' ? undefined : username,
  });
  const s = new Session(client, username === '' ? null : username);
  session = s;
  wire(s);
  if (username !== '') localStorage.setItem(USERNAME_KEY, username);
  show(ui.signIn, false);
  show(ui.chat, true);
  s.render();
  client.connect().catch(() => {});
  ui.signInButton.disabled = false;
}

function endSession(message) {
  const s = session;
  session = null;
  if (s !== null) {
    for (const room of s.rooms.values()) clearTyping(room);
    s.client.close();
  }
  show(ui.chat, false);
  show(ui.signIn, true);
  showError(ui.signInError, message);
  showError(ui.roomsError, null);
  showError(ui.roomError, null);
  renderConnection(null);
  ui.username.focus();
}

// --------------------------------------------------------------- wiring ----

ui.signInForm.addEventListener('submit', (event) => {
  event.preventDefault();
  signIn();
});
ui.signOut.addEventListener('click', () => endSession(null));
ui.refreshRooms.addEventListener('click', () => {
  if (session !== null) refreshRoomList(session);
});
ui.createRoomForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = ui.newRoomName.value.trim();
  if (session === null) return;
  if (name === '') {
    showError(ui.roomsError, 'Give the room a name.');
    return;
  }
  if (await createRoom(session, name, ui.newRoomPrivate.checked)) {
    ui.newRoomName.value = '';
    ui.newRoomPrivate.checked = false;
  }
});
ui.joinRoomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const roomId = ui.joinRoomId.value.trim();
  if (session === null || roomId === '') return;
  ui.joinRoomId.value = '';
  openRoom(session, roomId);
});
ui.leaveRoom.addEventListener('click', () => {
  if (session?.active) leaveRoom(session, session.active);
});
ui.loadOlder.addEventListener('click', () => {
  if (session?.active) loadOlder(session, session.active);
});
ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const s = session;
  if (s === null || s.active === null) return;
  const text = ui.messageInput.value;
  ui.messageInput.value = '';
  send(s, s.active, text);
});
ui.messageInput.addEventListener('input', () => {
  const s = session;
  if (s === null || s.active === null) return;
  if (ui.messageInput.value.trim() === '') s.client.stopTyping(s.active);
  else s.client.typing(s.active);
});

async function start() {
  ui.username.value = localStorage.getItem(USERNAME_KEY) ?? '';
  try {
    const response = await fetch('/demo/config.json', { cache: 'no-store' });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    serverConfig = { ...serverConfig, ...(await response.json()) };
  } catch (error) {
    ui.signInHint.textContent = `Cannot read this server's settings: ${error.message}. Reload the page to try again.`;
    return;
  }
  ui.messageInput.maxLength = serverConfig.maxContentLength;
  if (serverConfig.devTokens) {
    ui.signInHint.textContent =
      'This server uses the built-in development secret, so it hands out development tokens: pick any name. Open a second tab (or another browser) with another name to chat between them.';
  } else {
    ui.signInHint.textContent =
      'This server verifies tokens with its own secret or key: paste a token. The username is used only when the token has no username claim.';
    show(ui.tokenField, true);
  }
  ui.signInButton.disabled = false;
  ui.username.focus();
}

start();
