// Resuming after what the server could not keep: a restart (new epoch, close
// 1001 first) and history evicted while the client was away — both end in a
// gap event, then the messages that follow, each once — and after a close
// 1013 as a slow consumer, which loses nothing.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { LIMIT, TcpProxy, closeAll, sleep, startServer, testClient, waitFor, within } from './helpers.js';

after(closeAll);

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('a server restart changes the epoch: close 1001, reconnect, a gap event, then the new sequence', LIMIT, async () => {
  const env = { DEFAULT_ROOMS: 'general:General', PRESENCE_DELAY_MS: '0' };
  let server = await startServer(env);
  const proxyA = await TcpProxy.start(server.port);
  const proxyB = await TcpProxy.start(server.port);
  const A = testClient(proxyA.url, 'reader');
  const B = testClient(proxyB.url, 'writer');
  try {
    await Promise.all([A.client.connect(), B.client.connect()]);
    const first = await A.client.join('general');
    await B.client.join('general');
    const before = [];
    for (let i = 1; i <= 5; i++) before.push(await B.client.send('general', `before ${i}`));
    assert.deepEqual(before.map((m) => m.seq), range(1, 5));
    await waitFor(() => A.rec.messages('general').length === 5, 'the reader has 5 messages');

    // SIGTERM: the server closes every connection with 1001 and exits.
    await server.stop('SIGTERM');
    await waitFor(() => A.rec.of('disconnected').some((d) => d.code === 1001), 'the reader got close 1001');
    assert.ok(B.rec.of('disconnected').some((d) => d.code === 1001), 'the writer got close 1001');
    // Sends while the server is down wait in the outbox.
    const during = [B.client.send('general', 'after 1'), B.client.send('general', 'after 2')];

    server = await startServer(env);
    proxyA.target = server.port;
    proxyB.target = server.port;
    const after = await within(Promise.all([...during, B.client.send('general', 'after 3')]), 'the sends after the restart');
    assert.deepEqual(after.map((m) => m.seq), [1, 2, 3], 'a new sequence');
    const epoch2 = after[0].epoch;
    assert.notEqual(epoch2, first.epoch);
    assert.ok(after.every((m) => m.epoch === epoch2));
    await waitFor(() => A.rec.messages('general').length === 8, 'the reader has the new messages');

    // What the reader's application saw, in order.
    const seen = A.rec.events
      .filter((e) => e.name === 'gap' || (e.name === 'message' && e.value.roomId === 'general'))
      .map((e) => (e.name === 'gap' ? `gap ${e.value.previousEpoch}@${e.value.lastSeq} -> ${e.value.epoch}` : `${e.value.epoch}#${e.value.seq} ${e.value.content}`));
    assert.deepEqual(seen, [
      ...range(1, 5).map((i) => `${first.epoch}#${i} before ${i}`),
      `gap ${first.epoch}@5 -> ${epoch2}`,
      ...range(1, 3).map((i) => `${epoch2}#${i} after ${i}`),
    ]);
    const gap = A.rec.of('gap')[0];
    assert.equal(gap.epochChanged, true);
    const resume = A.rec.of('joined').at(-1);
    assert.equal(resume.recovered, false);
    assert.equal(resume.epoch, epoch2);
    assert.deepEqual(A.client.room('general'), { roomId: 'general', epoch: epoch2, lastSeq: 3, joined: true });
  } finally {
    await A.client.close();
    await B.client.close();
    await proxyA.close();
    await proxyB.close();
    await server.stop();
  }
});

test('history evicted while away: recovered false in the same epoch, a gap, then the retained messages', LIMIT, async () => {
  const server = await startServer({ HISTORY_LIMIT: '10', DEFAULT_ROOMS: 'general:General', RATE_LIMIT_MESSAGES: '1000' });
  const proxy = await TcpProxy.start(server.port);
  const A = testClient(proxy.url, 'away');
  const B = testClient(`ws://127.0.0.1:${server.port}/ws`, 'chatty');
  try {
    await Promise.all([A.client.connect(), B.client.connect()]);
    const { epoch } = await A.client.join('general');
    await B.client.join('general');
    for (let i = 1; i <= 3; i++) await B.client.send('general', `m${i}`);
    await waitFor(() => A.rec.messages('general').length === 3, 'three messages');

    proxy.down();
    proxy.cut();
    await waitFor(() => A.rec.of('disconnected').length >= 1, 'away');
    for (let i = 4; i <= 28; i++) await B.client.send('general', `m${i}`);
    proxy.up();
    await waitFor(() => A.client.room('general')?.lastSeq === 28, 'caught up');

    const gap = A.rec.of('gap');
    assert.deepEqual(gap, [{ roomId: 'general', epoch, previousEpoch: epoch, lastSeq: 3, epochChanged: false, firstSeq: 19 }]);
    assert.deepEqual(A.rec.messages('general').map((m) => m.seq), [1, 2, 3, ...range(19, 28)]);
    // The gap event came before the first message after it.
    const order = A.rec.events.filter((e) => e.name === 'gap' || e.name === 'message').map((e) => (e.name === 'gap' ? 'gap' : e.value.seq));
    assert.deepEqual(order, [1, 2, 3, 'gap', ...range(19, 28)]);
  } finally {
    await A.client.close();
    await B.client.close();
    await proxy.close();
    await server.stop();
  }
});

test('a slow consumer closed with 1013 reconnects and resumes without losing a message', LIMIT, async () => {
  const server = await startServer({
    DEFAULT_ROOMS: 'general:General',
    OUTBOUND_QUEUE_LIMIT: '8',
    MAX_CONTENT_LENGTH: '60000',
    HISTORY_LIMIT: '1000',
    RATE_LIMIT_MESSAGES: '100000',
  });
  const proxy = await TcpProxy.start(server.port);
  const R = testClient(proxy.url, 'slow');
  const S = testClient(`ws://127.0.0.1:${server.port}/ws`, 'fast');
  try {
    await Promise.all([R.client.connect(), S.client.connect()]);
    await Promise.all([R.client.join('general'), S.client.join('general')]);
    // The reader stops reading; 200 messages of 60 kB (12 MB) outgrow the
    // kernel's buffers and then the server's queue of 8.
    proxy.pause();
    const N = 200;
    const big = 'x'.repeat(59_990);
    const sends = range(1, N).map((i) => S.client.send('general', `${i} ${big}`));
    let closed = 0;
    const deadline = Date.now() + 20_000;
    while (closed === 0 && Date.now() < deadline) {
      closed = await server.metric('chatflow_slow_consumer_closes_total');
      if (closed === 0) await sleep(20);
    }
    assert.equal(closed, 1, 'the server closed the slow consumer');
    // Within the 5 s the server gives a slow consumer to read its close frame.
    proxy.resume();
    const stored = await within(Promise.all(sends), 'every send stored', 20_000);
    assert.deepEqual(stored.map((m) => m.seq), range(1, N));
    await waitFor(() => R.client.room('general')?.lastSeq === N, 'the reader caught up', 20_000);
    assert.ok(R.rec.of('disconnected').some((d) => d.code === 1013), `closed with 1013: ${JSON.stringify(R.rec.of('disconnected'))}`);
    assert.deepEqual(R.rec.messages('general').map((m) => m.seq), range(1, N), 'each message once, in order');
    assert.deepEqual(R.rec.of('gap'), []);
    assert.ok(R.rec.of('joined').some((j) => j.recovered === true), 'resumed');
  } finally {
    await R.client.close();
    await S.client.close();
    await proxy.close();
    await server.stop();
  }
});
