// What the tests share: the real server binary, started on a free port;
// HS256 tokens minted with Node's crypto; a TCP proxy between a client and
// the server that a test can cut, hold, pause or refuse; a WebSocket that records
// what the client writes; seeded random numbers.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

import { ChatClient } from '../src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The server binary: `CHAT_FLOW_BIN`, or the workspace's debug build. */
export const SERVER_BIN = process.env.CHAT_FLOW_BIN ?? path.resolve(here, '../../../target/debug/chat-flow');

/** The HS256 secret the tests' servers use (set as `JWT_SECRET`). */
export const SECRET = 'chat-flow-js-client-tests-secret-0123456789';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every 5 ms until it holds; fails naming `what` after `timeoutMs`. */
export async function waitFor(condition, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(5);
  }
}

/** Resolves with `promise`'s value, or fails naming `what` after `timeoutMs`. */
export function within(promise, what, timeoutMs = 10_000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** mulberry32: uniform numbers in [0, 1) from a 32-bit seed. */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ----------------------------------------------------------------- tokens ----

let jti = 0;

/**
 * An HS256 JWT (claims as in docs/PROTOCOL.md "Authentication"). Every token
 * is distinct (a `jti` counter), so that a callback minting tokens never
 * hands back one the server refused.
 */
export function mintToken({ sub, username, ttlS = 3600, exp, rooms, secret = SECRET }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: exp ?? now + ttlS, jti: `t${++jti}` };
  if (username !== undefined) claims.username = username;
  if (rooms !== undefined) claims.rooms = rooms;
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signingInput = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${signature}`;
}

// ----------------------------------------------------------------- server ----

/** Servers still running: killed if the test process exits first. */
const running = new Set();
/** Their handles, for `closeAll`. */
const servers = new Set();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/**
 * Starts the server binary on 127.0.0.1 with `PORT=0` and resolves once it
 * logged the address it listens on (`{"fields":{"message":"listening",
 * "addr":"127.0.0.1:N"}}`, on stdout). Its environment is only what is given
 * here (no variables of the test's own environment, no `.env`: it runs in
 * an empty directory).
 */
export async function startServer(env = {}) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`no server binary at ${SERVER_BIN}: run \`cargo build -p chat-flow\` in the workspace (or set CHAT_FLOW_BIN)`);
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'chat-flow-js-'));
  const fullEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'info',
    JWT_SECRET: SECRET,
    SHUTDOWN_GRACE_MS: '1000',
    ...env,
  };
  const proc = spawn(SERVER_BIN, [], { cwd: dir, env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  const logs = [];
  const exited = new Promise((resolve) =>
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      resolve({ code, signal });
    }),
  );
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not log "listening" within 10 s:\n${logs.join('\n')}`)), 10_000);
    const onLine = (line) => {
      logs.push(line);
      try {
        const entry = JSON.parse(line);
        if (entry?.fields?.message === 'listening') {
          clearTimeout(timer);
          resolve(Number(String(entry.fields.addr).split(':').pop()));
        }
      } catch {
        // Not a JSON line (a start-up error on stderr): kept in `logs`.
      }
    };
    for (const stream of [proc.stdout, proc.stderr]) {
      let buffered = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buffered += chunk;
        let i;
        while ((i = buffered.indexOf('\n')) >= 0) {
          onLine(buffered.slice(0, i));
          buffered = buffered.slice(i + 1);
        }
      });
    }
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? signal}) before listening:\n${logs.join('\n')}`));
    });
  });
  let stopped = null;
  const server = {
    port,
    proc,
    logs,
    env: fullEnv,
    /** The value of a counter or gauge on `GET /metrics`. */
    async metric(name) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return line === undefined ? undefined : Number(line.split(' ')[1]);
    },
    /** Stops the server (`SIGTERM`: drain with close 1001; `SIGKILL`: die). */
    stop(signal = 'SIGTERM') {
      if (stopped === null) {
        servers.delete(server);
        proc.kill(signal);
        stopped = within(exited, 'the server to exit', 15_000).finally(() => rmSync(dir, { recursive: true, force: true }));
      }
      return stopped;
    },
  };
  servers.add(server);
  return server;
}

// ------------------------------------------------------------------ proxy ----

/**
 * A TCP proxy in front of the server. A test can `cut()` every connection
 * through it (both sockets destroyed: the client sees the TCP connection
 * die mid-stream), `hold()` what the server sends on the current
 * connections (dropped, as if lost on the way), refuse new connections
 * (`down()`/`up()`), and point it at a restarted server (`target`).
 */
export class TcpProxy {
  /** @param {number} target the server's port */
  static async start(target) {
    const proxy = new TcpProxy(target);
    proxies.add(proxy);
    await new Promise((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.port = proxy.server.address().port;
    return proxy;
  }

  constructor(target) {
    this.target = target;
    this.refusing = false;
    this.accepted = 0;
    this.pairs = new Set();
    this.server = net.createServer((client) => this.#accept(client));
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  #accept(client) {
    this.accepted += 1;
    if (this.refusing) {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect(this.target, '127.0.0.1');
    upstream.setNoDelay(true);
    const pair = { client, upstream, held: false };
    this.pairs.add(pair);
    client.on('data', (data) => upstream.write(data));
    upstream.on('data', (data) => {
      if (!pair.held) client.write(data);
    });
    // One side closed: the other is ended after what it was sent (a close
    // frame goes through); an error kills both.
    for (const [s, other] of [[client, upstream], [upstream, client]]) {
      s.on('close', () => {
        this.pairs.delete(pair);
        if (!other.destroyed) other.end();
      });
      s.on('error', () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      });
    }
  }

  /**
   * Kills every current connection at once with a TCP reset: no close
   * frame, nothing more of what was in flight.
   */
  cut() {
    for (const { client, upstream } of this.pairs) {
      for (const s of [client, upstream]) {
        try {
          s.resetAndDestroy();
        } catch {
          s.destroy();
        }
      }
    }
    this.pairs.clear();
  }

  /** From now on, drops what the server sends on the current connections. */
  hold() {
    for (const pair of this.pairs) pair.held = true;
  }

  /**
   * Stops reading what the server sends on the current connections: it
   * piles up in the kernel's buffers, then in the server's outbound queue,
   * as for a client that stopped reading.
   */
  pause() {
    for (const pair of this.pairs) pair.upstream.pause();
  }

  /** Reads again (see `pause`). */
  resume() {
    for (const pair of this.pairs) pair.upstream.resume();
  }

  /** Refuses new connections (accepted, then destroyed at once). */
  down() {
    this.refusing = true;
  }

  up() {
    this.refusing = false;
  }

  close() {
    proxies.delete(this);
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------- clients ----

const live = new Set();

/**
 * Keeps `client` to be closed by `closeAll()`, so that a test failing
 * half-way does not leave a client reconnecting forever (and the test
 * process running).
 */
export function track(client) {
  live.add(client);
  return client;
}

/** Proxies not closed yet. */
const proxies = new Set();

/**
 * Closes every tracked client, proxy and server still open (each test file
 * calls it in `after`, so that a failed or timed-out test leaves nothing
 * running).
 */
export async function closeAll() {
  const clients = [...live];
  live.clear();
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([...proxies].map((p) => p.close()));
  await Promise.all([...servers].map((server) => server.stop('SIGKILL')));
}

/** Every test's time limit: a regression fails, it does not hang. */
export const LIMIT = { timeout: 60_000 };

/**
 * A `ws` WebSocket class that records every frame the client writes
 * (`{ at, frame }`, parsed) in `log`, and counts the sockets opened.
 */
export function recordingWebSocket(log, opened = { count: 0 }) {
  return class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      opened.count += 1;
    }

    send(data, ...rest) {
      log.push({ at: Date.now(), frame: JSON.parse(data) });
      return super.send(data, ...rest);
    }
  };
}

/**
 * A client for user `sub` at `url` with fast reconnects, fresh tokens on
 * every call of its callback, and everything it does recorded:
 * `rec.events` (`{ name, value, at }`, in order), `rec.sent` (frames it
 * wrote), `rec.sockets.count`, and helpers over them.
 */
export function testClient(url, sub, options = {}) {
  const sent = [];
  const sockets = { count: 0 };
  const { ttlS, ...rest } = options;
  const client = track(new ChatClient({
    url,
    token: () => mintToken({ sub, username: sub, ttlS: ttlS ?? 3600 }),
    WebSocket: recordingWebSocket(sent, sockets),
    backoffBaseMs: 20,
    backoffMaxMs: 200,
    ...rest,
  }));
  const events = [];
  const names = ['state', 'connecting', 'connected', 'authenticated', 'disconnected', 'closed', 'joined', 'gap', 'message', 'ack', 'sendFailed', 'left', 'userJoined', 'userLeft', 'typing', 'rateLimited', 'serverError', 'error', 'frame'];
  for (const name of names) client.on(name, (value) => events.push({ name, value, at: Date.now() }));
  const rec = {
    events,
    sent,
    sockets,
    of: (name) => events.filter((e) => e.name === name).map((e) => e.value),
    /** Messages delivered in `roomId`, in delivery order. */
    messages: (roomId) => events.filter((e) => e.name === 'message' && e.value.roomId === roomId).map((e) => e.value),
  };
  return { client, rec };
}
