// Rate limits: a refused request waits the server's retryAfterMs and goes
// again; nothing is lost, and the client never gets close to the 1008 the
// server keeps for clients that ignore the limit.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { LIMIT, closeAll, startServer, testClient, waitFor, within } from './helpers.js';

let server;

before(async () => {
  server = await startServer({
    DEFAULT_ROOMS: 'general:General',
    // 5 sends per user and 5 other requests per connection, per second;
    // 5 refusals in a row close the connection with 1008.
    RATE_LIMIT_MESSAGES: '5',
    RATE_LIMIT_REQUESTS: '5',
    RATE_LIMIT_WINDOW_MS: '1000',
    RATE_LIMIT_DISCONNECT_AFTER: '5',
    PRESENCE_DELAY_MS: '0',
  });
});

after(async () => {
  await closeAll();
  await server?.stop();
});

const url = () => `ws://127.0.0.1:${server.port}/ws`;
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Checks that after every RATE_LIMIT_EXCEEDED (received at `at`, with
 * `retryAfterMs`) the client wrote no request of `types` before the wait
 * was over.
 */
function assertWaited(rec, types) {
  const refusals = rec.events.filter((e) => e.name === 'frame' && e.value.type === 'ERROR' && e.value.payload.code === 'RATE_LIMIT_EXCEEDED');
  for (const r of refusals) {
    const until = r.at + r.value.payload.retryAfterMs;
    const early = rec.sent.filter((s) => types.includes(s.frame.type) && s.at > r.at && s.at < until - 2);
    assert.deepEqual(early.map((s) => s.frame.type), [], `written ${early.map((s) => until - s.at)} ms before the retryAfterMs of a refusal ran out`);
  }
  return refusals.length;
}

test('sends beyond the bucket wait retryAfterMs and all arrive once, in order; no 1008', LIMIT, async () => {
  const S = testClient(url(), 'eager');
  const O = testClient(url(), 'calm');
  try {
    await Promise.all([S.client.connect(), O.client.connect()]);
    await Promise.all([S.client.join('general'), O.client.join('general')]);
    const start = Date.now();
    const stored = await within(Promise.all(range(1, 15).map((i) => S.client.send('general', `burst ${i}`))), 'the burst stored', 15_000);
    const elapsed = Date.now() - start;
    assert.deepEqual(stored.map((m) => m.seq - stored[0].seq), range(0, 14), 'stored once each, in order');
    // 5 at once, then 10 more at 5 per second.
    assert.ok(elapsed >= 1500, `took ${elapsed} ms`);
    const refusals = assertWaited(S.rec, ['SEND_MESSAGE']);
    assert.ok(refusals >= 1, 'the server refused some sends');
    assert.ok(S.rec.of('rateLimited').length === refusals);
    assert.deepEqual(S.rec.of('disconnected'), [], 'never disconnected');
    assert.deepEqual(S.rec.of('sendFailed'), []);
    await waitFor(() => O.rec.messages('general').length === 15, 'the other user has the burst');
    assert.deepEqual(O.rec.messages('general').map((m) => m.content), range(1, 15).map((i) => `burst ${i}`));
  } finally {
    await S.client.close();
    await O.client.close();
  }
});

test('other requests beyond the connection bucket are retried after retryAfterMs; no 1008', LIMIT, async () => {
  const C = testClient(url(), 'curious');
  try {
    await C.client.connect();
    await C.client.join('general');
    const results = await within(
      Promise.all([...range(1, 12).map(() => C.client.listRooms()), ...range(1, 4).map(() => C.client.history('general', { limit: 1 }))]),
      'every request answered',
      15_000,
    );
    assert.equal(results.length, 16);
    assert.ok(results.slice(0, 12).every((rooms) => rooms.some((r) => r.id === 'general')));
    const refusals = assertWaited(C.rec, ['LIST_ROOMS', 'GET_HISTORY', 'JOIN_ROOM', 'PING']);
    assert.ok(refusals >= 1, 'the server refused some requests');
    assert.deepEqual(C.rec.of('disconnected'), [], 'never disconnected');
  } finally {
    await C.client.close();
  }
});
