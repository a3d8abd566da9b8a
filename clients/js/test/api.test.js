// The API against the real server: promises for requests, events for
// broadcasts, typing helpers, the outbox bound, backoff, close().

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ChatClient, ChatClientError, backoffDelay, tokenExpiresAt } from '../src/index.js';
import { LIMIT, TcpProxy, closeAll, mintToken, seededRandom, sleep, startServer, testClient, waitFor, within } from './helpers.js';

let server;

before(async () => {
  server = await startServer({ TYPING_TIMEOUT_MS: '1500', PRESENCE_DELAY_MS: '0' });
});

after(async () => {
  await closeAll();
  await server?.stop();
});

const direct = () => `ws://127.0.0.1:${server.port}/ws`;

test('requests are promises, broadcasts are events', LIMIT, async () => {
  const { client: alice, rec: a } = testClient(direct(), 'alice');
  const { client: bob, rec: b } = testClient(direct(), 'bob');
  try {
    assert.equal(alice.state, 'idle');
    assert.deepEqual(await alice.connect(), { userId: 'alice', username: 'alice' });
    assert.equal(alice.state, 'open');
    await bob.connect();

    const rooms = await alice.listRooms();
    assert.ok(rooms.some((r) => r.id === 'general'), 'the default room is listed');

    const { room, epoch } = await alice.createRoom({ name: 'Team', description: 'the team' });
    assert.equal(room.name, 'Team');
    assert.equal(typeof epoch, 'string');
    assert.deepEqual(alice.room(room.id), { roomId: room.id, epoch, lastSeq: 0, joined: true }, 'the creator is joined at once');

    const joined = await bob.join(room.id);
    assert.equal(joined.epoch, epoch);
    assert.deepEqual(joined.users.map((u) => u.userId).sort(), ['alice', 'bob']);
    await waitFor(() => a.of('userJoined').some((e) => e.roomId === room.id && e.user.userId === 'bob'), 'alice sees bob join');

    const sent = await alice.send(room.id, 'hello');
    assert.equal(sent.seq, 1);
    assert.equal(sent.content, 'hello');
    assert.equal(sent.epoch, epoch);
    assert.match(sent.clientMessageId, /^[0-9a-z]{12}-1$/);
    assert.deepEqual(a.of('ack').map((x) => x.seq), [1]);
    await waitFor(() => b.messages(room.id).length === 1, 'bob gets the message');
    assert.equal(b.messages(room.id)[0].id, sent.id);
    assert.deepEqual(a.messages(room.id).map((m) => m.id), [sent.id], 'the sender gets its own message once');

    const emote = await bob.send(room.id, 'waves', { type: 'emote', clientMessageId: 'bob-wave-1' });
    assert.equal(emote.type, 'emote');
    assert.equal(emote.clientMessageId, 'bob-wave-1');

    const page = await bob.history(room.id, { limit: 1 });
    assert.deepEqual(page.messages.map((m) => m.seq), [2]);
    assert.equal(page.hasMore, true);
    const older = await bob.history(room.id, { beforeSeq: 2 });
    assert.deepEqual(older.messages.map((m) => m.seq), [1]);
    assert.equal(older.hasMore, false);

    assert.ok((await bob.ping()) >= 0);

    await assert.rejects(bob.join('no-such-room'), (e) => e instanceof ChatClientError && e.code === 'ROOM_NOT_FOUND');
    assert.equal(bob.room('no-such-room'), undefined, 'a room that cannot be joined is forgotten');
    await assert.rejects(bob.send('general', 'not joined'), (e) => e.code === 'NOT_A_MEMBER');
    assert.equal(b.of('sendFailed').at(-1).code, 'NOT_A_MEMBER');
    await assert.rejects(bob.send(room.id, '   '), (e) => e.code === 'INVALID_MESSAGE');
    // A chosen id must be in the creator's rooms claim, checked before
    // existence (contract v3): nobody can squat an id granted to others.
    await assert.rejects(alice.createRoom({ name: 'Dup', id: room.id }), (e) => e.code === 'FORBIDDEN');
    const { client: carol } = testClient(direct(), 'carol', {
      token: () => mintToken({ sub: 'carol', username: 'carol', rooms: ['club'] }),
    });
    await carol.connect();
    assert.equal((await carol.createRoom({ name: 'Club', id: 'club' })).room.id, 'club');
    await assert.rejects(carol.createRoom({ name: 'Club', id: 'club' }), (e) => e.code === 'ROOM_EXISTS');

    await bob.leave(room.id);
    assert.deepEqual(b.of('left'), [{ roomId: room.id, reason: 'requested' }]);
    assert.equal(bob.room(room.id), undefined);
    await waitFor(() => a.of('userLeft').some((e) => e.roomId === room.id && e.userId === 'bob'), 'alice sees bob leave');
    await assert.rejects(bob.send(room.id, 'gone'), (e) => e.code === 'NOT_A_MEMBER');
    assert.equal(a.of('disconnected').length + b.of('disconnected').length, 0);
  } finally {
    await alice.close();
    await bob.close();
  }
  assert.equal(alice.state, 'closed');
  assert.deepEqual(a.of('closed'), [{ reason: 'closed', error: null }]);
});

test('typing renews while the user types, and stops by itself', LIMIT, async () => {
  // The server clears typing after 1.5 s without a renewal.
  const { client: alice } = testClient(direct(), 'alice', { typingRenewMs: 500, typingIdleMs: 400 });
  const { client: bob, rec: b } = testClient(direct(), 'bob');
  try {
    await Promise.all([alice.connect(), bob.connect()]);
    await Promise.all([alice.join('general'), bob.join('general')]);
    const typing = () => b.events.filter((e) => e.name === 'typing' && e.value.userId === 'alice');

    // Keystrokes every 100 ms for 3 s: twice the server's timeout.
    const start = Date.now();
    while (Date.now() - start < 3000) {
      alice.typing('general');
      await sleep(100);
    }
    const lastKeystroke = Date.now();
    assert.deepEqual(typing().map((e) => e.value.isTyping), [true], 'renewed: no false while typing');
    await waitFor(() => typing().length === 2, 'typing stops');
    const stop = typing()[1];
    assert.equal(stop.value.isTyping, false);
    // Stopped by the client after 400 ms idle, not by the server's 1.5 s timeout.
    assert.ok(stop.at - lastKeystroke < 1000, `stopped ${stop.at - lastKeystroke} ms after the last keystroke`);

    // Sending a message ends typing (the server says so); the next keystroke starts it again.
    alice.typing('general');
    await waitFor(() => typing().length === 3, 'typing again');
    await alice.send('general', 'done typing');
    await waitFor(() => typing().length === 4, 'the send ends typing');
    alice.typing('general');
    await waitFor(() => typing().length === 5, 'a keystroke after sending starts typing again');
    alice.stopTyping('general');
    await waitFor(() => typing().length === 6, 'stopTyping');
    assert.deepEqual(typing().map((e) => e.value.isTyping), [true, false, true, false, true, false]);
  } finally {
    await alice.close();
    await bob.close();
  }
});

test('the outbox is bounded: past it a send fails at once; the queued ones go after reconnecting', LIMIT, async () => {
  const proxy = await TcpProxy.start(server.port);
  const { client, rec } = testClient(proxy.url, 'carol', { outboxMax: 3 });
  try {
    await client.connect();
    await client.join('general');
    proxy.down();
    proxy.cut();
    await waitFor(() => rec.of('disconnected').length >= 1, 'disconnected');
    const queued = [client.send('general', 'q1'), client.send('general', 'q2'), client.send('general', 'q3')];
    await assert.rejects(client.send('general', 'q4'), (e) => e.code === 'OUTBOX_FULL');
    assert.equal(rec.of('sendFailed').at(-1).code, 'OUTBOX_FULL');
    assert.equal(client.outboxSize, 3);
    proxy.up();
    const stored = await within(Promise.all(queued), 'the queued sends');
    assert.deepEqual(stored.map((m) => m.content), ['q1', 'q2', 'q3']);
    assert.deepEqual(stored.map((m) => m.seq - stored[0].seq), [0, 1, 2], 'stored in order, once each');
    assert.equal(client.outboxSize, 0);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('reconnect delays are full-jitter exponential backoff from the injected random source', LIMIT, async () => {
  const proxy = await TcpProxy.start(server.port);
  proxy.down();
  const seed = 1234;
  const { client, rec } = testClient(proxy.url, 'dave', { random: seededRandom(seed), backoffBaseMs: 10, backoffMaxMs: 80 });
  try {
    client.connect();
    await waitFor(() => rec.of('disconnected').length >= 6, 'six failed attempts');
    // The client draws 12 numbers for its clientMessageId prefix, then one per delay.
    const expected = seededRandom(seed);
    for (let i = 0; i < 12; i++) expected();
    const delays = rec.of('disconnected').slice(0, 6).map((d) => d.delayMs);
    assert.deepEqual(delays, [0, 1, 2, 3, 4, 5].map((attempt) => backoffDelay(expected, attempt, 10, 80)));
    assert.deepEqual(rec.of('connecting').slice(0, 6).map((c) => c.attempt), [0, 1, 2, 3, 4, 5]);
    proxy.up();
    await within(client.connect(), 'connected after the proxy is up');
    assert.equal(rec.of('connecting').at(-1).attempt >= 6, true);
  } finally {
    await client.close();
    await proxy.close();
  }
  // Full jitter: uniform in [0, min(max, base * 2^attempt)].
  const r = seededRandom(7);
  for (let attempt = 0; attempt < 40; attempt++) {
    const d = backoffDelay(r, attempt, 100, 10_000);
    assert.ok(Number.isInteger(d) && d >= 0 && d <= Math.min(10_000, 100 * 2 ** attempt), `attempt ${attempt}: ${d}`);
  }
  assert.equal(backoffDelay(() => 0.999999, 3, 100, 10_000), 800);
  assert.equal(backoffDelay(() => 0, 3, 100, 10_000), 0);
});

test('close() ends everything: pending promises reject, no more attempts, no timers left', LIMIT, async () => {
  const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const proxy = await TcpProxy.start(server.port);
  const { client, rec } = testClient(proxy.url, 'erin');
  await client.connect();
  await client.join('general');
  proxy.down();
  proxy.cut();
  await waitFor(() => rec.of('disconnected').length >= 1, 'disconnected');
  const send = client.send('general', 'never');
  const join = client.join('elsewhere');
  const list = client.listRooms();
  await client.close();
  for (const p of [send, join, list]) await assert.rejects(p, (e) => e.code === 'CLOSED');
  assert.equal(client.state, 'closed');
  assert.deepEqual(rec.of('closed'), [{ reason: 'closed', error: null }]);
  await assert.rejects(client.send('general', 'after'), (e) => e.code === 'CLOSED');
  await assert.rejects(client.connect(), (e) => e.code === 'CLOSED');
  const attempts = rec.of('connecting').length;
  await sleep(300);
  assert.equal(rec.of('connecting').length, attempts, 'no attempt after close()');
  await proxy.close();
  const timersAfter = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  assert.ok(timersAfter <= timersBefore, `timers: ${timersBefore} before, ${timersAfter} after`);
});

test('close() on a connected client closes the WebSocket cleanly; others see the user leave', LIMIT, async () => {
  const { client: alice } = testClient(direct(), 'frank');
  const { client: bob, rec: b } = testClient(direct(), 'gina');
  try {
    await Promise.all([alice.connect(), bob.connect()]);
    await alice.join('general');
    await bob.join('general');
    await alice.close();
    await waitFor(() => b.of('userLeft').some((e) => e.userId === 'frank'), 'bob sees frank leave');
  } finally {
    await bob.close();
  }
});

test('tokenExpiresAt reads exp; a client needs a WebSocket and a token', LIMIT, () => {
  const token = mintToken({ sub: 'x', exp: 2_000_000_000 });
  assert.equal(tokenExpiresAt(token), 2_000_000_000_000);
  assert.equal(tokenExpiresAt('not a jwt'), null);
  assert.equal(tokenExpiresAt('a.b.c'), null);
  if (typeof globalThis.WebSocket !== 'function') {
    // Node 20 has no WebSocket of its own.
    assert.throws(() => new ChatClient({ url: 'ws://x/ws', token: 't' }), /WebSocket/);
  }
  assert.throws(() => new ChatClient({ url: 'ws://x/ws', WebSocket: class {} }), /token/);
});

test('a message too big: refused at once when the client knows the limit; after close 1009, not resent', LIMIT, async () => {
  const small = await startServer({ MAX_MESSAGE_BYTES: '1000' });
  const url = `ws://127.0.0.1:${small.port}/ws`;
  const A = testClient(url, 'verbose');
  const B = testClient(url, 'careful', { maxMessageBytes: 1000 });
  try {
    await Promise.all([A.client.connect(), B.client.connect()]);
    await Promise.all([A.client.join('general'), B.client.join('general')]);

    // B knows the server's limit: nothing is written.
    await assert.rejects(B.client.send('general', 'y'.repeat(2000)), (e) => e.code === 'MESSAGE_TOO_BIG');
    assert.equal(B.rec.sent.filter((s) => s.frame.type === 'SEND_MESSAGE').length, 0);

    // A does not: the server closes with 1009; that send fails, the next one
    // (written behind it) is resent after reconnecting.
    const big = A.client.send('general', 'x'.repeat(2000));
    const after = A.client.send('general', 'small');
    await assert.rejects(within(big, 'the big send to fail', 3000), (e) => e.code === 'MESSAGE_TOO_BIG');
    assert.equal((await within(after, 'the small message')).content, 'small');
    await sleep(200);
    assert.deepEqual(A.rec.of('disconnected').map((d) => d.code), [1009], 'closed once, not again by a resend');
    assert.equal(A.rec.of('sendFailed')[0].code, 'MESSAGE_TOO_BIG');
  } finally {
    await A.client.close();
    await B.client.close();
    await small.stop();
  }
});
