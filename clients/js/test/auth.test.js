// Tokens: refreshed on the open connection before they expire; close 1008
// means "not with this token again"; a refused token is replaced by the
// callback's next one, and the same one again stops the client.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ChatClient, tokenExpiresAt } from '../src/index.js';
import { LIMIT, SECRET, closeAll, mintToken, recordingWebSocket, sleep, startServer, testClient, track, waitFor, within } from './helpers.js';

let server;

before(async () => {
  // No leeway: a token is refused from its `exp` on, to the second.
  server = await startServer({ JWT_LEEWAY_SECONDS: '0', DEFAULT_ROOMS: 'general:General', PRESENCE_DELAY_MS: '0', RATE_LIMIT_MESSAGES: '1000' });
});

after(async () => {
  await closeAll();
  await server?.stop();
});

const url = () => `ws://127.0.0.1:${server.port}/ws`;

test('the token is refreshed on the open connection before it expires', LIMIT, async () => {
  // Tokens that live 2 s (1-2 s, as `exp` is in whole seconds).
  const A = testClient(url(), 'refresher', { ttlS: 2 });
  const O = testClient(url(), 'listener');
  try {
    await Promise.all([A.client.connect(), O.client.connect()]);
    await Promise.all([A.client.join('general'), O.client.join('general')]);
    const start = Date.now();
    let i = 0;
    while (Date.now() - start < 5000) {
      await A.client.send('general', `tick ${++i}`);
      await sleep(250);
    }
    const auths = A.rec.sent.filter((s) => s.frame.type === 'AUTHENTICATE');
    assert.ok(auths.length >= 4, `${auths.length} AUTHENTICATEs in 5 s of 2 s tokens`);
    assert.equal(A.rec.sockets.count, 1, 'all on one connection');
    assert.deepEqual(A.rec.of('disconnected'), [], 'never disconnected');
    assert.deepEqual(A.rec.of('serverError'), [], 'never told the token expired');
    const refreshed = () => A.rec.of('authenticated').filter((a) => a.refreshed).length;
    await waitFor(() => refreshed() >= auths.length - 1, 'every refresh accepted');
    // Each refresh went out while the token before it was still valid.
    for (let k = 1; k < auths.length; k++) {
      const previousExp = tokenExpiresAt(auths[k - 1].frame.payload.token);
      assert.ok(auths[k].at < previousExp, `refresh ${k} at ${auths[k].at}, previous token expired at ${previousExp}`);
      assert.notEqual(auths[k].frame.payload.token, auths[k - 1].frame.payload.token);
    }
    await waitFor(() => O.rec.messages('general').length === i, 'every tick arrived');
  } finally {
    await A.client.close();
    await O.client.close();
  }
});

test('without refresh, expiry closes with 1008; the client reconnects with a fresh token and resumes', LIMIT, async () => {
  const A = testClient(url(), 'expiring', { ttlS: 2, autoRefresh: false });
  const B = testClient(url(), 'steady');
  try {
    await Promise.all([A.client.connect(), B.client.connect()]);
    await Promise.all([A.client.join('general'), B.client.join('general')]);
    const sends = [];
    const start = Date.now();
    while (Date.now() - start < 3500) {
      sends.push(B.client.send('general', `beat ${sends.length + 1}`));
      await sleep(50);
    }
    const stored = await within(Promise.all(sends), 'all beats stored');
    await waitFor(() => A.client.room('general')?.lastSeq === stored.at(-1).seq, 'the expiring client caught up');
    assert.ok(A.rec.of('disconnected').some((d) => d.code === 1008), 'closed with 1008 at expiry');
    assert.ok(A.rec.of('serverError').some((e) => e.code === 'UNAUTHORIZED'), 'told the token expired');
    assert.ok(A.rec.sockets.count >= 2, 'reconnected');
    assert.notEqual(A.client.state, 'closed');
    const mine = A.rec.messages('general').filter((m) => m.content.startsWith('beat '));
    assert.deepEqual(mine.map((m) => m.id), stored.map((m) => m.id), 'every beat once, in order, across the 1008');
    assert.deepEqual(A.rec.of('gap'), []);
  } finally {
    await A.client.close();
    await B.client.close();
  }
});

test('close 1008, then the callback gives the same token again: the client stops', LIMIT, async () => {
  const token = mintToken({ sub: 'stubborn', ttlS: 2 });
  let calls = 0;
  const sent = [];
  const client = track(
    new ChatClient({
      url: url(),
      token: () => {
        calls += 1;
        return token;
      },
      WebSocket: recordingWebSocket(sent),
      backoffBaseMs: 20,
      backoffMaxMs: 100,
    }),
  );
  const closed = [];
  const disconnected = [];
  client.on('closed', (c) => closed.push(c));
  client.on('disconnected', (d) => disconnected.push(d));
  try {
    await client.connect();
    await client.join('general');
    await waitFor(() => closed.length === 1, 'the client stops', 5000);
    assert.equal(closed[0].reason, 'token-refused');
    assert.equal(closed[0].error.code, 'TOKEN_REFUSED');
    assert.deepEqual(disconnected.map((d) => d.code), [1008]);
    assert.equal(client.state, 'closed');
    // One connection only: the same token never went to the server again.
    assert.equal(sent.filter((s) => s.frame.type === 'AUTHENTICATE').length, 1);
    assert.ok(calls >= 2, 'the callback was asked for a new token');
    await assert.rejects(client.send('general', 'x'), (e) => e.code === 'CLOSED');
  } finally {
    await client.close();
  }
});

test('a token the server refuses on connect: the callback is asked again; a new token gets in', LIMIT, async () => {
  const tokens = [mintToken({ sub: 'retry', secret: 'not-the-server-secret-at-all-0123456789' }), mintToken({ sub: 'retry', secret: SECRET })];
  let calls = 0;
  const errors = [];
  const client = track(new ChatClient({ url: url(), token: () => tokens[Math.min(calls++, 1)], WebSocket: recordingWebSocket([]), backoffBaseMs: 20 }));
  client.on('error', (e) => errors.push(e));
  try {
    assert.equal((await within(client.connect(), 'authenticated')).userId, 'retry');
    assert.equal(calls, 2);
    assert.equal(errors[0].code, 'UNAUTHORIZED');
  } finally {
    await client.close();
  }
  // And when the callback keeps giving the refused token, the client stops.
  const bad = tokens[0];
  const stubborn = track(new ChatClient({ url: url(), token: () => bad, WebSocket: recordingWebSocket([]), backoffBaseMs: 20 }));
  await assert.rejects(within(stubborn.connect(), 'refused'), (e) => e.code === 'TOKEN_REFUSED');
  assert.equal(stubborn.state, 'closed');
});
