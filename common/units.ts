import { ErrorCodes, OcdnError } from './errors.ts';

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
};

/** "512MB", "1.5GiB", "4096" → bytes. Throws on anything else. */
export function parseBytes(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw new OcdnError(ErrorCodes.CONFIG, `not a byte size: ${input}`);
    return Math.floor(input);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(input);
  const unit = m?.[2]?.toLowerCase() ?? '';
  const mult = BYTE_UNITS[unit === '' ? 'b' : unit];
  if (!m || mult === undefined) throw new OcdnError(ErrorCodes.CONFIG, `not a byte size: "${input}" (use e.g. 512MB, 1GiB, 65536)`);
  return Math.floor(Number(m[1]) * mult);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "10s", "250ms", "5m", "1h" → milliseconds; a bare number is seconds. */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw new OcdnError(ErrorCodes.CONFIG, `not a duration: ${input}`);
    return input * 1000;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(input);
  if (!m) throw new OcdnError(ErrorCodes.CONFIG, `not a duration: "${input}" (use e.g. 250ms, 10s, 5m)`);
  return Number(m[1]) * DURATION_UNITS[m[2] ?? 's']!;
}

const RATE_UNITS: Record<string, number> = { bps: 1, kbps: 1e3, mbps: 1e6, gbps: 1e9 };

/** "5mbps", "800kbps" → bits per second. */
export function parseBitrate(input: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(bps|kbps|mbps|gbps)\s*$/i.exec(input);
  if (!m) throw new OcdnError(ErrorCodes.CONFIG, `not a bitrate: "${input}" (use e.g. 5mbps, 800kbps)`);
  return Number(m[1]) * RATE_UNITS[m[2]!.toLowerCase()]!;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
