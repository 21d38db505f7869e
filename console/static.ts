/**
 * The page: plain HTML, CSS and ES modules from console/public, and the two libraries it uses
 * from node_modules (hls.js, uPlot), all read once at start-up and served from memory. Nothing
 * the page loads comes from another host, and nothing served here holds a secret.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { extname, join } from 'node:path';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { sendError } from '../common/http.ts';

const PUBLIC_DIR = join(import.meta.dirname, 'public');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** Served path → file; the vendor files by the names the page imports them with. */
function files(): Map<string, string> {
  const require = createRequire(import.meta.url);
  const uplotDir = join(require.resolve('uplot'), '..');
  const map = new Map<string, string>([
    ['/vendor/hls.min.js', require.resolve('hls.js/dist/hls.min.js')],
    ['/vendor/uPlot.iife.min.js', join(uplotDir, 'uPlot.iife.min.js')],
    ['/vendor/uPlot.min.css', join(uplotDir, 'uPlot.min.css')],
  ]);
  for (const name of readdirSync(PUBLIC_DIR)) {
    // Type declarations are for the tests' type checker, not for the browser.
    if (name.endsWith('.d.ts') || !(extname(name) in TYPES)) continue;
    map.set(`/${name}`, join(PUBLIC_DIR, name));
  }
  map.set('/', join(PUBLIC_DIR, 'index.html'));
  return map;
}

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export class StaticAssets {
  private readonly assets = new Map<string, Asset>();

  constructor() {
    for (const [path, file] of files()) {
      const body = readFileSync(file);
      this.assets.set(path, {
        body,
        type: TYPES[extname(file)] ?? 'application/octet-stream',
        etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
      });
    }
  }

  /** Every served path (the tests read each one). */
  paths(): string[] {
    return [...this.assets.keys()];
  }

  has(path: string): boolean {
    return this.assets.has(path);
  }

  serve(req: IncomingMessage, res: ServerResponse, path: string, headers: Record<string, string>): void {
    const a = this.assets.get(path);
    if (!a) return void sendError(res, new OcdnError(ErrorCodes.NOT_FOUND, `not found: ${path.slice(0, 200)}`), headers);
    // Revalidated on each load (no-cache), so a console upgraded in place never mixes old and new modules.
    const head = { 'content-type': a.type, etag: a.etag, 'cache-control': 'no-cache', ...headers };
    if (req.headers['if-none-match'] === a.etag) {
      res.writeHead(304, head);
      return void res.end();
    }
    res.writeHead(200, { ...head, 'content-length': a.body.length });
    res.end(req.method === 'HEAD' ? undefined : a.body);
  }
}
