// The demo page in a real Chromium, against the real server binary: two
// users in two browser contexts sign in with development tokens, chat, see
// each other type, come and go, page back through history, lose their
// network and get it back, live through a server restart, and every message
// is shown exactly once, in order. Screenshots of both pages are taken at
// the moments that show the most (see README.md: SCREENSHOT_DIR).

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  Proxy,
  launchChromium,
  members,
  messages,
  mintToken,
  openDemo,
  openRoom,
  recorded,
  screenshotPair,
  send,
  shown,
  signIn,
  startServer,
  waitFor,
  waitForState,
} from './helpers.js';

// Screenshots go to SCREENSHOT_DIR (clients/demo/test.sh --update-screenshots
// sets docs/screenshots), else to a temporary directory removed afterwards.
const keepShots = process.env.SCREENSHOT_DIR !== undefined && process.env.SCREENSHOT_DIR !== '';
const shotDir = keepShots ? path.resolve(process.env.SCREENSHOT_DIR) : mkdtempSync(path.join(tmpdir(), 'chat-flow-shots-'));
mkdirSync(shotDir, { recursive: true });
const shots = [];

async function screenshot(browser, alice, bob, caption, name) {
  const file = path.join(shotDir, name);
  await screenshotPair(browser, alice, bob, caption, file);
  shots.push(file);
}

let browser;
let server;
let proxyA;
let proxyB;
let alice;
let bob;

/** The server's settings: sends are not rate-limited within this test's bursts. */
const SERVER_ENV = { RATE_LIMIT_MESSAGES: '1000', RATE_LIMIT_WINDOW_MS: '1000' };

before(async () => {
  browser = await launchChromium();
  server = await startServer(SERVER_ENV);
  // Each user's browser reaches the server through a proxy of its own.
  proxyA = await new Proxy(server.port).listen();
  proxyB = await new Proxy(server.port).listen();
});

after(async () => {
  await browser?.close();
  await proxyA?.close();
  await proxyB?.close();
  await server?.stop();
  if (!keepShots) rmSync(shotDir, { recursive: true, force: true });
});

/** Both pages show `expected` (delivered messages, in order), nothing pending. */
async function bothShow(expected, what) {
  const view = async (demo) =>
    (await shown(demo))
      .filter((m) => m.divider === undefined)
      .map((m) => (m.pending ? { pending: m.content } : { seq: m.seq, author: m.author, content: m.content }));
  for (const demo of [alice, bob]) {
    await waitFor(async () => JSON.stringify(await view(demo)) === JSON.stringify(expected), `${demo.name} shows ${expected.length} messages (${what})`).catch(() => {});
    assert.deepEqual(await view(demo), expected, `${demo.name}: ${what}`);
  }
}

/** Delivered messages of one epoch are 1, 2, 3, … once each. */
function assertExactlyOnceInOrder(list, who) {
  const byEpoch = new Map();
  for (const m of list) {
    if (!byEpoch.has(m.epoch)) byEpoch.set(m.epoch, []);
    byEpoch.get(m.epoch).push(m.seq);
  }
  for (const [epoch, seqs] of byEpoch) {
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `${who}: epoch ${epoch} has seqs ${seqs.join(',')}`);
  }
}

test('the page and its files are served with their types and a strict CSP', async () => {
  alice = await openDemo(browser, proxyA.url, 'alice');
  bob = await openDemo(browser, proxyB.url, 'bob');
  const headers = await alice.response.allHeaders();
  assert.equal(alice.response.status(), 200);
  assert.equal(headers['content-type'], 'text/html; charset=utf-8');
  assert.match(headers['content-security-policy'], /^default-src 'none'; script-src 'self'; style-src 'self';/);
  assert.equal(headers['x-content-type-options'], 'nosniff');
  // The page ran its module (it asked the server how to sign in).
  await alice.page.locator('#sign-in-button:not([disabled])').waitFor();
  const hint = await alice.page.textContent('#sign-in-hint');
  assert.match(hint, /development tokens/);
  assert.equal(await alice.page.isVisible('#token'), false, 'no token field with development tokens');
});

test('a bad username is refused before anything is sent', async () => {
  const { page } = alice;
  for (const [name, message] of [
    ['   ', /Choose a username/],
    ['bell\u0007', /control characters/],
  ]) {
    await page.fill('#username', name);
    await page.click('#sign-in-button');
    assert.match(await page.textContent('#sign-in-error'), message);
    assert.equal(await page.isVisible('#chat'), false);
  }
  // The field takes at most 32 characters.
  await page.fill('#username', 'x'.repeat(40));
  assert.equal((await page.inputValue('#username')).length, 32);
});

test('two users sign in, join a room and see each other', async () => {
  await signIn(alice, 'alice');
  await signIn(bob, 'bob');
  await openRoom(alice, 'General Chat');
  await openRoom(bob, 'General Chat');
  await waitFor(async () => (await members(alice)).join() === 'alice,bob', 'alice sees bob arrive (USER_JOINED)');
  assert.deepEqual(await members(bob), ['alice', 'bob']);
});

test('messages go both ways, and typing shows', async () => {
  await send(alice, 'Hello Bob! This page is served by the chat server itself.');
  await bothShow([{ seq: 1, author: 'alice', content: 'Hello Bob! This page is served by the chat server itself.' }], 'the first message');
  await bob.page.type('#message-input', 'Hi Alice, typing');
  await alice.page.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
  await alice.page.locator('#member-list li', { hasText: 'typing…' }).waitFor();
  await screenshot(browser, alice, bob, 'Two users in #general: alice sees bob typing.', '01-chat-typing.png');
  await bob.page.fill('#message-input', 'Hi Alice! Same here: no framework, no build step.');
  await bob.page.press('#message-input', 'Enter');
  await bothShow(
    [
      { seq: 1, author: 'alice', content: 'Hello Bob! This page is served by the chat server itself.' },
      { seq: 2, author: 'bob', content: 'Hi Alice! Same here: no framework, no build step.' },
    ],
    'a reply',
  );
  // Sending ends typing.
  await alice.page.locator('#typing:empty').waitFor();
  await send(bob, '/me waves');
  await alice.page.locator('.msg.emote .content', { hasText: '* bob waves' }).waitFor();
});

test('a room is created, joined and left; presence follows', async () => {
  await alice.page.fill('#new-room-name', 'Design');
  await alice.page.click('#create-room-form button[type="submit"]');
  await alice.page.locator('#room-name', { hasText: 'Design' }).waitFor();
  await bob.page.click('#refresh-rooms');
  await openRoom(bob, 'Design');
  await waitFor(async () => (await members(alice)).join() === 'alice,bob', 'alice sees bob join Design');
  await bob.page.click('#leave-room');
  await bob.page.locator('#no-room').waitFor();
  await waitFor(async () => (await members(alice)).join() === 'alice', 'alice sees bob leave Design (USER_LEFT)');
  assert.equal(await bob.page.locator('.room-button.joined', { hasText: 'Design' }).count(), 0);
  // A room that does not exist is said so.
  await bob.page.fill('#join-room-id', 'no-such-room');
  await bob.page.click('#join-room-form button[type="submit"]');
  await bob.page.locator('#rooms-error', { hasText: 'ROOM_NOT_FOUND' }).waitFor();
});

test('a room opens on its newest 25 messages; older ones page in (GET_HISTORY)', async () => {
  // alice fills Design with 40 messages.
  for (let i = 1; i <= 40; i += 1) await send(alice, `history ${i}`);
  await waitFor(async () => (await messages(alice)).length === 40 && (await alice.page.locator('.msg.pending').count()) === 0, 'alice has her 40 messages stored');
  await openRoom(bob, 'Design');
  const seqs = async () => (await messages(bob)).map((m) => m.seq);
  await waitFor(async () => (await seqs()).length === 25, 'bob shows 25 messages');
  assert.deepEqual(await seqs(), Array.from({ length: 25 }, (_, i) => i + 16));
  await bob.page.click('#load-older');
  await waitFor(async () => (await seqs()).length === 40, 'bob shows 40 messages after one page');
  assert.deepEqual(await seqs(), Array.from({ length: 40 }, (_, i) => i + 1));
  assert.deepEqual((await messages(bob)).map((m) => m.content), Array.from({ length: 40 }, (_, i) => `history ${i + 1}`));
  await bob.page.locator('#load-older').waitFor({ state: 'hidden' });
  // Back to #general for the rest.
  await openRoom(alice, 'General Chat');
  await openRoom(bob, 'General Chat');
});

test("alice's network drops: she reconnects, resumes, and every message is there once", async () => {
  const before = (await messages(alice)).map(({ seq, author, content }) => ({ seq, author, content }));
  assert.equal(before.length, 3);
  // Her next message reaches the server, but its acknowledgement does not reach her.
  proxyA.hold(true);
  await send(alice, 'sent just before the network dropped');
  await bob.page.locator('.msg .content', { hasText: 'sent just before the network dropped' }).waitFor();
  assert.equal(await alice.page.locator('.msg.pending').count(), 1, 'alice has no acknowledgement');
  proxyA.refuse = true;
  proxyA.cut();
  proxyA.hold(false);
  await waitForState(alice, 'reconnecting');
  await send(alice, 'written while offline (1)');
  await send(alice, 'written while offline (2)');
  for (let i = 1; i <= 3; i += 1) await send(bob, `while alice is away (${i})`);
  await waitFor(async () => (await members(bob)).join() === 'bob', 'bob sees alice go (USER_LEFT)');
  await waitFor(async () => (await alice.page.locator('.msg.pending').count()) === 3, 'alice shows 3 unacknowledged messages');
  await screenshot(browser, alice, bob, "alice's network is down: she is reconnecting, her messages wait; bob sees her gone.", '02-network-down.png');

  proxyA.refuse = false;
  await waitForState(alice, 'connected', 30_000);
  const expected = [
    ...before,
    { seq: 4, author: 'alice', content: 'sent just before the network dropped' },
    ...[1, 2, 3].map((i) => ({ seq: 4 + i, author: 'bob', content: `while alice is away (${i})` })),
    { seq: 8, author: 'alice', content: 'written while offline (1)' },
    { seq: 9, author: 'alice', content: 'written while offline (2)' },
  ];
  await bothShow(expected, 'after the network came back');
  await waitFor(async () => (await members(bob)).join() === 'alice,bob', 'bob sees alice back');
  const { states } = await recorded(alice);
  const sinceDrop = states.slice(states.lastIndexOf('reconnecting'));
  assert.deepEqual(sinceDrop, ['reconnecting', 'resuming', 'connected'], `alice's indicator went ${states.join(' → ')}`);
  await screenshot(browser, alice, bob, 'The network is back: alice resumed #general; every message once, in order.', '03-resumed.png');
});

test('the server restarts: a new sequence, and nothing shown twice', async () => {
  const port = server.port;
  await server.stop();
  await waitForState(alice, 'reconnecting');
  await waitForState(bob, 'reconnecting');
  await send(alice, 'written while the server was down');
  server = await startServer(SERVER_ENV, port);
  await waitForState(alice, 'connected', 30_000);
  await waitForState(bob, 'connected', 30_000);
  await send(bob, 'first message after the restart?');
  for (const demo of [alice, bob]) {
    await waitFor(async () => (await messages(demo)).length === 11, `${demo.name} shows 11 messages`);
    const list = await messages(demo);
    assertExactlyOnceInOrder(list, demo.name);
    const epochs = [...new Set(list.map((m) => m.epoch))];
    assert.equal(epochs.length, 2, `${demo.name}: two epochs`);
    // The old sequence stays; the new one starts after one divider.
    const items = await shown(demo);
    const divider = items.findIndex((m) => m.divider !== undefined);
    assert.match(items[divider].divider, /server restarted/);
    assert.deepEqual(items.slice(divider + 1).map((m) => m.content), ['written while the server was down', 'first message after the restart?']);
    assert.equal(items.filter((m) => m.divider !== undefined).length, 1);
  }
  await screenshot(browser, alice, bob, 'After a server restart: the history before it stays, a new sequence starts below the line.', '04-after-restart.png');
});

test('the pages hit no CSP violation and no error of their own', async () => {
  for (const demo of [alice, bob]) {
    const { violations } = await recorded(demo);
    assert.deepEqual(violations, [], `${demo.name}: CSP violations`);
    // Failed connections while the network or the server was down are expected;
    // anything else (an exception, a refused script) is not.
    const unexpected = demo.problems.filter((p) => !/ERR_CONNECTION_(REFUSED|RESET|CLOSED)|ERR_EMPTY_RESPONSE|WebSocket connection to .* failed|Failed to load resource/.test(p));
    assert.deepEqual(unexpected, [], `${demo.name}: errors`);
  }
});

test('screenshots are PNG images', () => {
  assert.equal(shots.length, 4);
  for (const file of shots) {
    const bytes = readFileSync(file);
    assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], file);
    assert.ok(bytes.length > 20_000, `${file} is ${bytes.length} bytes`);
  }
});

test('with a server secret the page asks for a token, and a pasted one signs in', async () => {
  const secret = 'demo-browser-test-secret-0123456789abcdef';
  const other = await startServer({ JWT_SECRET: secret });
  try {
    const carol = await openDemo(browser, `http://127.0.0.1:${other.port}/`, 'carol');
    await carol.page.locator('#sign-in-button:not([disabled])').waitFor();
    assert.equal(await carol.page.isVisible('#token'), true);
    // No development tokens here.
    const status = await carol.page.evaluate(async () => (await fetch('/demo/token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"username":"carol"}' })).status);
    assert.equal(status, 404);
    await carol.page.click('#sign-in-button');
    assert.match(await carol.page.textContent('#sign-in-error'), /Paste a token/);
    await carol.page.fill('#token', mintToken({ sub: 'carol', username: 'Carol', secret }));
    await carol.page.click('#sign-in-button');
    await waitForState(carol, 'connected');
    assert.equal(await carol.page.textContent('#whoami-name'), 'Carol');
    await openRoom(carol, 'General Chat');
    await send(carol, 'signed in with a pasted token');
    await waitFor(async () => (await messages(carol)).length === 1, 'carol sees her message');
    // A token the server refuses ends the session with a reason.
    await carol.page.click('#sign-out');
    await carol.page.fill('#token', mintToken({ sub: 'carol', secret: 'another-secret-entirely-0123456789' }));
    await carol.page.click('#sign-in-button');
    await carol.page.locator('#sign-in-error', { hasText: 'refused the token' }).waitFor();
    const { violations } = await recorded(carol);
    assert.deepEqual(violations, []);
    await carol.context.close();
  } finally {
    await other.stop();
  }
});
