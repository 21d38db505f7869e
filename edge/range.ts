/** A satisfiable single byte range, inclusive, clamped to the object. */
export interface ByteSpan {
  start: number;
  end: number;
}

/**
 * `Range: bytes=…` against an object of `size` bytes (RFC 9110 §14). Returns the span,
 * 'unsatisfiable' (→ 416), or undefined when the header is to be ignored and the whole object
 * sent: malformed values, other units, and multi-range requests (a server may ignore Range,
 * and players ask for one range at a time).
 */
export function parseRange(header: string, size: number): ByteSpan | 'unsatisfiable' | undefined {
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const [, a, b] = m as unknown as [string, string, string];
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(a);
  if (b !== '' && Number(b) < start) return undefined; // invalid range-spec: ignore
  if (start >= size) return 'unsatisfiable';
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  return { start, end };
}

/** If-None-Match against a strong ETag (weak comparison, as RFC 9110 §13.1.2 asks). */
export function etagMatches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  for (const part of header.split(',')) {
    const t = part.trim();
    if (t === etag || (t.startsWith('W/') && t.slice(2) === etag)) return true;
  }
  return false;
}
