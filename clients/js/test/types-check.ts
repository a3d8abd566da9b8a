// Compiled (never run) by `npm run typecheck`: the declarations in
// src/index.d.ts describe the API as an application uses it, through the
// package's own `exports`.
import {
  ChatClient,
  ChatClientError,
  backoffDelay,
  tokenExpiresAt,
  type ChatClientOptions,
  type DeliveredMessage,
  type GapEvent,
  type JoinResult,
  type Room,
  type WebSocketConstructor,
} from 'chat-flow-client';

// The browser's WebSocket fits the option (the DOM library's declaration).
const browserWebSocket: WebSocketConstructor = WebSocket;

declare const SomeWebSocket: ChatClientOptions['WebSocket'];

const options: ChatClientOptions = {
  url: 'ws://localhost:3001/ws',
  token: async () => 'jwt',
  username: 'alice',
  WebSocket: SomeWebSocket,
  random: Math.random,
  clock: { now: () => Date.now() },
  backoffBaseMs: 100,
  backoffMaxMs: 10_000,
  outboxMax: 100,
};

async function demo(): Promise<void> {
  const client = new ChatClient(options);
  const me: { userId: string; username: string } = await client.connect();
  const joined: JoinResult = await client.join('general');
  const epoch: string = joined.epoch;
  const recovered: boolean | undefined = joined.recovered;
  const sent: DeliveredMessage = await client.send('general', 'hello', { type: 'emote' });
  const seq: number = sent.seq;
  const rooms: Room[] = await client.listRooms();
  const page = await client.history('general', { beforeSeq: seq, limit: 10 });
  const more: boolean = page.hasMore;
  const rtt: number = await client.ping();
  const created = await client.createRoom({ name: 'Team', type: 'private' });
  const id: string = created.room.id;
  client.typing(id);
  client.stopTyping(id);
  await client.refreshToken();
  await client.leave(id);
  const cursor = client.room('general');
  const last: number | undefined = cursor?.lastSeq;

  const off = client.on('message', (m) => {
    const e: string = m.epoch;
    const content: string = m.content;
    void e;
    void content;
  });
  off();
  client.on('gap', (g: GapEvent) => {
    const changed: boolean = g.epochChanged;
    void changed;
  });
  client.once('disconnected', ({ code, delayMs }) => {
    const c: number | null = code;
    const d: number = delayMs;
    void c;
    void d;
  });
  client.on('sendFailed', ({ code, error }) => {
    const c: string = code;
    const e: ChatClientError = error;
    void c;
    void e;
  });
  client.on('closed', ({ reason }) => {
    const r: 'closed' | 'token-refused' = reason;
    void r;
  });
  // @ts-expect-error: no such event
  client.on('nonsense', () => {});
  // @ts-expect-error: the payload of 'typing' has no seq
  client.on('typing', (t) => t.seq);
  // @ts-expect-error: message types are 'text' or 'emote'
  void client.send('general', 'x', { type: 'shout' });
  // @ts-expect-error: state is read-only
  client.state = 'open';

  try {
    await client.join('nope');
  } catch (error) {
    if (error instanceof ChatClientError) {
      const code: string = error.code;
      const retry: number | undefined = error.retryAfterMs;
      void code;
      void retry;
    }
  }
  await client.close();
  void [me, epoch, recovered, more, rtt, last];
}

const delay: number = backoffDelay(Math.random, 3, 100, 10_000);
const expires: number | null = tokenExpiresAt('a.b.c');
// @ts-expect-error: options need a url
new ChatClient({ token: 't' });
void [demo, delay, expires, browserWebSocket];
