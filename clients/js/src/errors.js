/**
 * The error a request's promise rejects with. `code` is the server's error
 * code (`NOT_A_MEMBER`, `FORBIDDEN`, `RATE_LIMIT_EXCEEDED`, …) or one of the
 * client's own: `CLOSED` (the client was closed), `DISCONNECTED` (the
 * connection was lost while a request that is not safe to repeat was in
 * flight), `TIMEOUT`, `OUTBOX_FULL`, `MESSAGE_TOO_BIG`, `TOKEN_REFUSED`,
 * `TOKEN_ERROR`.
 */
export class ChatClientError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{ requestId?: string, retryAfterMs?: number, cause?: unknown }} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'ChatClientError';
    this.code = code;
    if (details.requestId !== undefined) this.requestId = details.requestId;
    if (details.retryAfterMs !== undefined) this.retryAfterMs = details.retryAfterMs;
  }
}
