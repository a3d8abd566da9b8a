// Exactly once, in order, across forced disconnects; resends that never
// duplicate. The TCP connections are killed under the clients by a proxy.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { LIMIT, TcpProxy, closeAll, seededRandom, sleep, startServer, testClient, waitFor, within } from './helpers.js';

let server;

before(async () => {
  server = await startServer({
    HISTORY_LIMIT: '1000',
    RATE_LIMIT_MESSAGES: '100000',
    RATE_LIMIT_REQUESTS: '100000',
    DEFAULT_ROOMS: 'general:General,stream:Stream',
    PRESENCE_DELAY_MS: '0',
  });
});

after(async () => {
  await closeAll();
  await server?.stop();
});

const direct = () => `ws://127.0.0.1:${server.port}/ws`;
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** How many times each clientMessageId was written. */
function writesPerCmid(sent) {
  const counts = new Map();
  for (const { frame } of sent) {
    if (frame.type !== 'SEND_MESSAGE') continue;
    const cmid = frame.payload.clientMessageId;
    counts.set(cmid, (counts.get(cmid) ?? 0) + 1);
  }
  return counts;
}

test('every message reaches the app exactly once, in seq order, while connections are cut mid-stream', LIMIT, async (t) => {
  const N = 400;
  const random = seededRandom(42);
  const proxyS = await TcpProxy.start(server.port);
  const proxyR = await TcpProxy.start(server.port);
  const S = testClient(proxyS.url, 'sender');
  const R = testClient(proxyR.url, 'receiver');
  const O = testClient(direct(), 'observer');
  const clients = [S, R, O].map((c) => c.client);
  try {
    await Promise.all(clients.map((c) => c.connect()));
    await Promise.all(clients.map((c) => c.join('stream')));

    const sends = [];
    const streaming = (async () => {
      for (let i = 1; i <= N; i++) {
        sends.push(S.client.send('stream', `m${i}`));
        await sleep(2);
      }
    })();
    let cutsR = 0;
    const cutting = (async () => {
      for (let k = 0; k < 10; k++) {
        await sleep(40 + Math.floor(random() * 80));
        if (k % 3 === 2) {
          // The sender's acknowledgements of the last 10 ms are lost: those
          // sends must be written again.
          proxyS.hold();
          await sleep(10);
          proxyS.cut();
        } else {
          if (proxyR.pairs.size > 0) cutsR += 1;
          proxyR.cut();
        }
      }
    })();
    await Promise.all([streaming, cutting]);
    const stored = await within(Promise.all(sends), 'every send acknowledged', 20_000);

    // The server stored each message once, in the order the app sent them.
    assert.deepEqual(stored.map((m) => m.seq), range(1, N));
    assert.deepEqual(stored.map((m) => m.content), range(1, N).map((i) => `m${i}`));
    const resent = [...writesPerCmid(S.rec.sent).values()].filter((n) => n > 1).length;
    assert.ok(resent > 0, 'some sends were in flight when the sender was cut, and were written again');

    for (const [name, c] of [['receiver', R], ['observer', O], ['sender', S]]) {
      await waitFor(() => c.rec.messages('stream').length >= N, `${name} has every message`);
    }
    await sleep(100);
    for (const [name, c] of [['receiver', R], ['observer', O], ['sender', S]]) {
      const got = c.rec.messages('stream');
      assert.deepEqual(got.map((m) => m.seq), range(1, N), `${name}: each seq once, in order`);
      assert.deepEqual(got.map((m) => m.id), stored.map((m) => m.id), `${name}: the stored messages`);
      assert.deepEqual(c.rec.of('gap'), [], `${name}: no gap`);
    }
    assert.ok(cutsR >= 3, `the receiver was cut ${cutsR} times`);
    assert.ok(R.rec.of('disconnected').length >= cutsR, 'every cut was a disconnect');
    const resumes = R.rec.of('joined').filter((j) => j.recovered === true);
    assert.ok(resumes.length >= 3, `the receiver resumed with recovered: true ${resumes.length} times`);
    // The cuts came mid-stream: some resumes brought back messages missed meanwhile.
    const recoveredFrames = R.rec.of('frame').filter((f) => f.type === 'ROOM_JOINED' && f.payload.recovered === true && f.payload.messages.length > 0);
    assert.ok(recoveredFrames.length > 0, 'a resume returned the messages missed while cut off');
    const recoveredCount = recoveredFrames.reduce((n, f) => n + f.payload.messages.length, 0);
    t.diagnostic(`receiver cut ${cutsR} times, resumed ${resumes.length} times, ${recoveredCount} messages recovered by resumes; sender: ${resent} sends written more than once`);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await proxyS.close();
    await proxyR.close();
  }
});

test('a send whose acknowledgement is lost is resent with the same clientMessageId and stored once', LIMIT, async () => {
  const proxy = await TcpProxy.start(server.port);
  const S = testClient(proxy.url, 'resender');
  const O = testClient(direct(), 'witness');
  try {
    await Promise.all([S.client.connect(), O.client.connect()]);
    await S.client.join('general');
    await O.client.join('general');
    const before = (await O.client.history('general', { limit: 1 })).messages.at(-1)?.seq ?? 0;

    // The server's replies to the sender are dropped from now on: the
    // message is stored and broadcast, its acknowledgement never arrives.
    proxy.hold();
    const sent = S.client.send('general', 'exactly once, please');
    await waitFor(() => O.rec.messages('general').some((m) => m.content === 'exactly once, please'), 'the witness sees the message');
    await sleep(50);
    assert.equal(S.rec.of('ack').length, 0, 'the acknowledgement was lost');
    proxy.cut();

    const stored = await within(sent, 'the resend acknowledged');
    const writes = S.rec.sent.filter((s) => s.frame.type === 'SEND_MESSAGE').map((s) => s.frame);
    assert.equal(writes.length, 2, 'written twice: once before the cut, once after');
    assert.equal(writes[0].payload.clientMessageId, writes[1].payload.clientMessageId, 'with the same clientMessageId');
    assert.notEqual(writes[0].requestId, writes[1].requestId);

    const seen = O.rec.messages('general').filter((m) => m.content === 'exactly once, please');
    assert.equal(seen.length, 1);
    assert.equal(stored.id, seen[0].id, 'the acknowledgement names the original message');
    assert.equal(stored.seq, before + 1);

    // Nothing else was stored: the next message follows it directly.
    const next = await S.client.send('general', 'next');
    assert.equal(next.seq, stored.seq + 1);
    const history = await O.client.history('general');
    assert.equal(history.messages.filter((m) => m.clientMessageId === stored.clientMessageId).length, 1);
    // The sender delivered its own message once too (from the resumed join).
    assert.equal(S.rec.messages('general').filter((m) => m.id === stored.id).length, 1);
  } finally {
    await S.client.close();
    await O.client.close();
    await proxy.close();
  }
});

test('sends made while the server is unreachable wait in the outbox and go in order once it is back', LIMIT, async () => {
  const proxy = await TcpProxy.start(server.port);
  const S = testClient(proxy.url, 'offline-sender');
  const O = testClient(direct(), 'offline-witness');
  try {
    await Promise.all([S.client.connect(), O.client.connect()]);
    await Promise.all([S.client.join('general'), O.client.join('general')]);
    proxy.down();
    proxy.cut();
    await waitFor(() => S.rec.of('disconnected').length >= 1, 'the sender is disconnected');
    const sends = range(1, 20).map((i) => S.client.send('general', `offline ${i}`));
    await sleep(300);
    assert.equal(S.client.outboxSize, 20);
    assert.ok(S.rec.of('disconnected').length >= 2, 'still trying');
    proxy.up();
    const stored = await within(Promise.all(sends), 'the outbox drained');
    assert.deepEqual(stored.map((m) => m.seq - stored[0].seq), range(0, 19));
    await waitFor(() => O.rec.messages('general').filter((m) => m.content.startsWith('offline ')).length === 20, 'the witness has them');
    assert.deepEqual(
      O.rec.messages('general').filter((m) => m.content.startsWith('offline ')).map((m) => m.content),
      range(1, 20).map((i) => `offline ${i}`),
    );
  } finally {
    await S.client.close();
    await O.client.close();
    await proxy.close();
  }
});

test('a connection that goes silent (no close, no reset) is found by the heartbeat and replaced', LIMIT, async () => {
  const proxy = await TcpProxy.start(server.port);
  const R = testClient(proxy.url, 'silent', { heartbeatIntervalMs: 200, idleTimeoutMs: 600 });
  const S = testClient(direct(), 'talker');
  try {
    await Promise.all([R.client.connect(), S.client.connect()]);
    await Promise.all([R.client.join('general'), S.client.join('general')]);
    await sleep(300);
    assert.ok(R.rec.sent.some((s) => s.frame.type === 'PING'), 'a PING after 200 ms of silence');
    assert.deepEqual(R.rec.of('disconnected'), [], 'answered: still connected');

    // A black hole: the TCP connection stays up, nothing more arrives.
    proxy.hold();
    const during = [];
    for (let i = 1; i <= 5; i++) during.push(await S.client.send('general', `unheard ${i}`));
    await waitFor(() => R.rec.of('disconnected').length === 1, 'the reader gives the connection up', 3000);
    assert.deepEqual(R.rec.of('disconnected')[0], { code: null, reason: 'idle timeout', delayMs: R.rec.of('disconnected')[0].delayMs });
    await waitFor(() => R.client.room('general')?.lastSeq === during.at(-1).seq, 'the reader resumed');
    assert.deepEqual(
      R.rec.messages('general').filter((m) => m.content.startsWith('unheard ')).map((m) => m.id),
      during.map((m) => m.id),
    );
  } finally {
    await R.client.close();
    await S.client.close();
    await proxy.close();
  }
});
