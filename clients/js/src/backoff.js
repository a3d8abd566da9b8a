/**
 * How long the client waits before reconnecting: exponential backoff with
 * full jitter, as the Rust client (`src/client/backoff.rs`) does it.
 *
 * @param {() => number} random uniform in [0, 1)
 * @param {number} attempt failed attempts since the last authentication, from 0
 * @param {number} baseMs bound of the first delay; doubled on every attempt
 * @param {number} maxMs largest bound
 * @returns {number} a whole number of milliseconds, uniform in
 *   [0, min(maxMs, baseMs * 2^attempt)]
 */
export function backoffDelay(random, attempt, baseMs, maxMs) {
  const bound = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.min(bound, Math.floor(random() * (bound + 1)));
}
