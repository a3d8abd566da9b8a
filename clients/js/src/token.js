/**
 * When a JWT expires, read from its `exp` claim without verifying anything
 * (verification is the server's job; the client only needs to know when to
 * ask for a fresh token).
 *
 * @param {string} token a JWT (`header.payload.signature`, base64url)
 * @returns {number | null} the expiry in Unix milliseconds, or null when the
 *   token is not a JWT or has no numeric `exp`
 */
export function tokenExpiresAt(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4 !== 0) b64 += '=';
    const binary = atob(b64);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims?.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}
