/**
 * What a session needs from the network: GET one object, optionally a byte range, with
 * progress callbacks that may abandon the download. Real mode implements it over undici with
 * a token bucket (transport-http.ts); virtual mode with a closed-form transfer model
 * (virtual.ts). Times are session time (ms).
 */
export type ObjectKind = 'manifest' | 'init' | 'segment';

export interface Progress {
  /** Since the request started (includes the RTT and TTFB). */
  elapsedMs: number;
  ttfbMs: number;
  bytes: number;
  /** From Content-Length, when known. */
  totalBytes: number | undefined;
}

export interface FetchRequest {
  url: string;
  kind: ObjectKind;
  headers?: Record<string, string>;
  /** Byte range [offset, offset + length). */
  range?: { offset: number; length: number };
  /** Keep the body as text (playlists); segment bodies are only counted. */
  wantText?: boolean;
  /** Until the response headers, session ms. */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Return true to abandon the download (the result then has abandoned = true). */
  onProgress?: (p: Progress) => boolean;
}

export interface FetchResult {
  status: number;
  header(name: string): string | undefined;
  bytes: number;
  text?: string;
  ttfbMs: number;
  /** Request start to last byte (or to abandonment). */
  totalMs: number;
  abandoned: boolean;
}

/** Connection refused/reset, timeout: the edge could not answer (failover material). */
export class TransportError extends Error {
  constructor(
    readonly kind: 'connect' | 'timeout' | 'reset',
    message: string,
  ) {
    super(message);
    this.name = 'TransportError';
  }
}

export interface Transport {
  fetch(req: FetchRequest): Promise<FetchResult>;
}
