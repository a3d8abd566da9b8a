// What the browser test needs: the real server binary (started on a free
// port, or again on the same one), a TCP proxy between a browser context
// and the server that the test can cut, refuse or hold, Debian's Chromium,
// and readers of what the demo page shows.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The server binary: `CHAT_FLOW_BIN`, or the workspace's debug build. */
export const SERVER_BIN = process.env.CHAT_FLOW_BIN ?? path.resolve(here, '../../../target/debug/chat-flow');

/** Debian's Chromium (scripts/ensure-chromium.sh installs it). */
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` (sync or async) until it holds; fails naming `what` after `timeoutMs`. */
export async function waitFor(condition, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(25);
  }
}

// ----------------------------------------------------------------- server ----

/** Servers still running: killed if the test process exits first. */
const running = new Set();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/**
 * Starts the server binary on 127.0.0.1 (`port`, or any free one) and
 * resolves once it logged the address it listens on. Its environment is only
 * what is given here: no JWT_SECRET unless `env` has one (so the built-in
 * development secret, and the page's development tokens), and no `.env`
 * (it runs in an empty directory).
 */
export async function startServer(env = {}, port = 0) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`no server binary at ${SERVER_BIN}: run \`cargo build -p chat-flow\` in the workspace (or set CHAT_FLOW_BIN)`);
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'chat-flow-demo-'));
  const fullEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOST: '127.0.0.1',
    PORT: String(port),
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'info',
    SHUTDOWN_GRACE_MS: '1000',
    ...env,
  };
  const proc = spawn(SERVER_BIN, [], { cwd: dir, env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  const logs = [];
  const exited = new Promise((resolve) =>
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      rmSync(dir, { recursive: true, force: true });
      resolve({ code, signal });
    }),
  );
  const bound = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not log "listening" within 10 s:\n${logs.join('\n')}`)), 10_000);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? signal}) before listening:\n${logs.join('\n')}`));
    });
    for (const stream of [proc.stdout, proc.stderr]) {
      let buffered = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buffered += chunk;
        let i;
        while ((i = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, i);
          buffered = buffered.slice(i + 1);
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
        }
      });
    }
  });
  return {
    port: bound,
    logs,
    /** Stops it (SIGTERM: the drain, close 1001) and waits for it to exit. */
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/**
 * An HS256 JWT signed with `secret` (a server with a JWT_SECRET gives no
 * development tokens: the page then takes a pasted one).
 */
export function mintToken({ sub, username, secret, ttlS = 3600 }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: now + ttlS };
  if (username !== undefined) claims.username = username;
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

// ------------------------------------------------------------------ proxy ----

/**
 * A TCP proxy on 127.0.0.1 in front of the server: a browser context that
 * loads the page through it sends everything through it (the page, its
 * token requests, its WebSocket), so the test can take that context's
 * network away without touching the server. (Chromium's offline emulation
 * does not close open WebSockets, so it cannot do this.)
 *
 * `cut()` destroys every connection (what `hold` kept is lost); `refuse`
 * closes new connections at once; `hold` keeps what the server sends from
 * reaching the browser (its acknowledgements are lost when the connection
 * is then cut).
 */
export class Proxy {
  #server;
  #pairs = new Set();
  refuse = false;
  #held = false;

  constructor(upstreamPort) {
    this.upstreamPort = upstreamPort;
  }

  async listen() {
    this.#server = net.createServer((client) => this.#accept(client));
    await new Promise((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = this.#server.address().port;
    return this;
  }

  get url() {
    return `http://127.0.0.1:${this.port}/`;
  }

  #accept(client) {
    if (this.refuse) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.upstreamPort, '127.0.0.1');
    const pair = { client, upstream, held: [] };
    this.#pairs.add(pair);
    const drop = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => {
      if (this.#held) pair.held.push(chunk);
      else client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => {
      if (!this.#held) client.end();
    });
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', () => {
      if (!this.#held) drop();
    });
  }

  /** Keeps (`true`) or lets through again (`false`) what the server sends. */
  hold(on) {
    this.#held = on;
    if (!on) {
      for (const pair of this.#pairs) {
        for (const chunk of pair.held.splice(0)) pair.client.write(chunk);
      }
    }
  }

  /** Destroys every connection now; held bytes are lost. */
  cut() {
    for (const pair of [...this.#pairs]) {
      pair.held = [];
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.#pairs.clear();
  }

  async close() {
    this.cut();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

// ---------------------------------------------------------------- browser ----

/** Launches Debian's Chromium headless; fails (never skips) when it cannot. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: run scripts/ensure-chromium.sh (apt-get install chromium)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
  });
}

/**
 * Runs in each page before its own scripts (injected by the browser, not
 * subject to the page's CSP): records every connection state the indicator
 * shows, and every CSP violation.
 */
function recordPage() {
  window.__states = [];
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
  document.addEventListener('DOMContentLoaded', () => {
    const indicator = document.getElementById('connection');
    if (indicator === null) return;
    window.__states.push(indicator.dataset.state);
    new MutationObserver(() => {
      const state = indicator.dataset.state;
      if (window.__states.at(-1) !== state) window.__states.push(state);
    }).observe(indicator, { attributes: true, attributeFilter: ['data-state'] });
  });
}

/**
 * A browser context with one page of the demo at `url`, its console errors
 * and page errors collected in `problems`.
 */
export async function openDemo(browser, url, name, viewport = { width: 900, height: 560 }) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(recordPage);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`${name}: uncaught ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`${name}: console: ${message.text()}`);
  });
  const response = await page.goto(url);
  return { name, context, page, problems, response };
}

/** Signs in on the page with a development token for `username`. */
export async function signIn(demo, username) {
  const { page } = demo;
  await page.locator('#sign-in-button:not([disabled])').waitFor();
  await page.fill('#username', username);
  await page.click('#sign-in-button');
  await waitForState(demo, 'connected');
}

/** Waits until the connection indicator shows `state`. */
export async function waitForState(demo, state, timeoutMs = 20_000) {
  await demo.page.locator(`#connection[data-state="${state}"]`).waitFor({ timeout: timeoutMs });
}

/** Clicks a room in the room list (joining it) and waits until it is open. */
export async function openRoom(demo, roomName) {
  const { page } = demo;
  const button = page.locator('.room-button', { has: page.locator('.room-name', { hasText: roomName }) });
  await button.first().click();
  await page.locator('#room-name', { hasText: roomName }).waitFor();
  await page.locator('.room-button[aria-current="true"].joined').waitFor();
}

/** Types `text` into the composer and sends it. */
export async function send(demo, text) {
  await demo.page.fill('#message-input', text);
  await demo.page.press('#message-input', 'Enter');
}

/**
 * What the open room shows, top to bottom: delivered messages
 * (`{ seq, epoch, author, content }`), dividers (`{ divider }`) and
 * unacknowledged sends (`{ pending, content }`).
 */
export async function shown(demo) {
  return demo.page.$$eval('#message-list > li', (items) =>
    items.map((li) => {
      if (li.classList.contains('divider')) return { divider: li.textContent };
      const content = li.querySelector('.content')?.textContent ?? '';
      if (li.classList.contains('pending')) return { pending: true, content };
      return {
        seq: Number(li.dataset.seq),
        epoch: li.dataset.epoch,
        author: li.querySelector('.author')?.textContent ?? '',
        content,
      };
    }),
  );
}

/** The delivered messages the open room shows. */
export async function messages(demo) {
  return (await shown(demo)).filter((m) => m.seq !== undefined);
}

/** The members list of the open room: usernames. */
export async function members(demo) {
  return demo.page.$$eval('#member-list > li', (items) => items.map((li) => li.firstChild?.textContent ?? ''));
}

/** The states the connection indicator went through, and CSP violations. */
export async function recorded(demo) {
  return demo.page.evaluate(() => ({ states: [...window.__states], violations: [...window.__violations] }));
}

/**
 * Writes one PNG of the two pages side by side, captioned, to `file`:
 * a page of its own shows the two screenshots and is screenshot in turn.
 */
export async function screenshotPair(browser, left, right, caption, file) {
  const shots = await Promise.all([left, right].map(async (demo) => ({ name: demo.name, png: await demo.page.screenshot() })));
  const page = await browser.newPage({ viewport: { width: 1860, height: 200 } });
  const figures = shots
    .map(
      (s) => `<figure><figcaption>${s.name}'s browser</figcaption><img src="data:image/png;base64,${s.png.toString('base64')}"></figure>`,
    )
    .join('');
  await page.setContent(`<!doctype html><html><head><style>
    body { margin: 0; padding: 16px; background: #2b2f36; font: 15px "DejaVu Sans", sans-serif; color: #e4e6eb; }
    p { margin: 0 0 12px; }
    .pair { display: flex; gap: 20px; }
    figure { margin: 0; }
    figcaption { margin-bottom: 6px; color: #aab1bd; }
    img { display: block; border: 1px solid #555; border-radius: 6px; }
  </style></head><body><p>${caption}</p><div class="pair">${figures}</div></body></html>`);
  await page.locator('img').last().evaluate((img) => img.decode());
  await page.screenshot({ path: file, fullPage: true });
  await page.close();
}
