/**
 * chat-flow-client: a Chat Flow client that never loses a message.
 * Dependency-free; runs in browsers and in Node 20+ given a WebSocket
 * constructor. The API is documented in index.d.ts and README.md.
 */
export { ChatClient } from './client.js';
export { ChatClientError } from './errors.js';
export { backoffDelay } from './backoff.js';
export { tokenExpiresAt } from './token.js';
