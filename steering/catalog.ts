import { createHash } from 'node:crypto';
import { CATALOG_KEY, type Catalog, type CatalogTitle } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { parseCatalog } from '../origin/catalog.ts';
import type { OriginReader } from '../origin/reader.ts';

/**
 * The titles steering may answer for, from the bucket's catalog.json (read with the S3 SDK
 * through OriginReader) and re-read every `refreshMs` so newly seeded titles appear without a
 * restart. A failed refresh keeps the last good catalog; before the first success every title
 * lookup is "catalog unavailable" (503), not "unknown title" (404), because we do not know.
 */
export interface CatalogOptions {
  /** Where catalog.json lives. Leave out with `static`. */
  reader?: OriginReader;
  /** A fixed catalog (benchmarks, tests without S3); no refresh. */
  static?: Catalog;
  refreshMs?: number;
  /** Retry period before the first success. */
  retryMs?: number;
  /** The floor between reads asked for by requests for a title not (yet) in the catalog. */
  demandGapMs?: number;
  log?: Logger;
}

/** The loaded catalog as served by GET /v1/catalog: made once per load, not once per request. */
export interface CatalogDocument {
  body: string;
  /** Strong ETag of `body`: equal bodies (an unchanged refresh) keep their ETag. */
  etag: string;
}

export class TitleCatalog {
  private byId = new Map<string, CatalogTitle>();
  private doc: CatalogDocument | undefined;
  private loadedAt: number | undefined;
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastAttemptAt = 0;
  private readonly retryMs: number;
  private loading: Promise<boolean> | undefined;
  private nextRead: Promise<void> | undefined;
  private readonly demandGapMs: number;
  private readonly reader: OriginReader | undefined;
  private readonly refreshMs: number;
  private readonly log: Logger | undefined;

  constructor(opts: CatalogOptions) {
    if (!opts.reader && !opts.static) throw new OcdnError(ErrorCodes.CONFIG, 'the title catalog needs an S3 reader or a static catalog');
    this.reader = opts.reader;
    this.refreshMs = opts.refreshMs ?? 30_000;
    this.retryMs = opts.retryMs ?? 2_000;
    this.demandGapMs = opts.demandGapMs ?? 250;
    this.log = opts.log;
    if (opts.static) this.install(opts.static);
  }

  /**
   * First load, then periodic refresh. Until a first load succeeds, retries come every
   * `retryMs` rather than every `refreshMs`: steering often starts before the bucket is seeded.
   */
  async start(): Promise<void> {
    if (!this.reader || this.stopped) return;
    await this.refresh();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped || this.refreshMs <= 0) return;
    const delay = this.loadedAt === undefined ? Math.min(this.refreshMs, this.retryMs) : this.refreshMs;
    this.timer = setTimeout(() => {
      void this.refresh().finally(() => this.schedule());
    }, delay);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Undefined when `title` is in the catalog. Otherwise a re-read that starts after this call,
   * so a title seeded a moment ago is found by the request that asks for it ("content seed"
   * then "steer" must not race a 2 s retry timer). Every caller waiting shares the next read,
   * and reads on demand start at most once per `demandGapMs`: an unknown-title flood is not an S3 flood.
   * The promise never rejects; the caller looks the title up again.
   */
  whenKnown(title: string): Promise<void> | undefined {
    if (this.byId.has(title) || !this.reader || this.stopped) return undefined;
    // A read already under way began before this request: the shared next read starts after it.
    this.nextRead ??= (async () => {
      await this.loading;
      const wait = this.lastAttemptAt + this.demandGapMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait).unref());
      this.nextRead = undefined;
      await this.refresh();
    })();
    return this.nextRead;
  }

  /** Re-reads catalog.json; true when a catalog was installed. Concurrent calls share one read. */
  refresh(): Promise<boolean> {
    if (!this.reader) return Promise.resolve(this.loadedAt !== undefined);
    this.loading ??= this.readOnce().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async readOnce(): Promise<boolean> {
    this.lastAttemptAt = Date.now();
    try {
      const obj = await this.reader!.getObject(CATALOG_KEY);
      const catalog = parseCatalog(obj.body.toString('utf8'));
      const before = this.byId.size;
      this.install(catalog);
      // Imported titles counted apart: an import that did not show up is the first thing an operator checks.
      if (this.lastError !== undefined || before !== this.byId.size)
        this.log?.info({ titles: this.byId.size, imported: catalog.titles.filter((t) => t.mode === 'import').length }, 'catalog loaded');
      this.lastError = undefined;
      return true;
    } catch (err) {
      const why = describeError(err);
      if (why !== this.lastError)
        this.log?.warn(
          { err: why, kept: this.byId.size },
          this.loadedAt === undefined ? 'catalog not loaded yet (retrying)' : 'catalog refresh failed; keeping the last good one',
        );
      this.lastError = why;
      return false;
    }
  }

  private install(catalog: Catalog): void {
    this.byId = new Map(catalog.titles.map((t) => [t.id, t]));
    const body = JSON.stringify(catalog);
    this.doc = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
    this.loadedAt = Date.now();
  }

  get loaded(): boolean {
    return this.loadedAt !== undefined;
  }

  /** The catalog as last loaded, serialised (undefined before the first load). */
  get document(): CatalogDocument | undefined {
    return this.doc;
  }

  /** How often the catalog is re-read (0: never, a static catalog or refresh off). */
  get refreshIntervalMs(): number {
    return this.reader ? Math.max(0, this.refreshMs) : 0;
  }

  get size(): number {
    return this.byId.size;
  }

  /** Why the catalog is unavailable (undefined once loaded). */
  get error(): string | undefined {
    return this.loadedAt === undefined ? (this.lastError ?? 'catalog not loaded yet') : undefined;
  }

  get(title: string): CatalogTitle | undefined {
    return this.byId.get(title);
  }

  /** The title, or OcdnError NOT_FOUND (unknown) / ORIGIN_UNAVAILABLE (no catalog yet). */
  require(title: string): CatalogTitle {
    const t = this.byId.get(title);
    if (t) return t;
    if (this.loadedAt === undefined) throw new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `title catalog unavailable: ${this.error}`);
    throw new OcdnError(ErrorCodes.NOT_FOUND, `unknown title "${title}" (not in ${CATALOG_KEY}, ${this.byId.size} titles)`);
  }

  ids(): string[] {
    return [...this.byId.keys()];
  }
}
