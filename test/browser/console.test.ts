/**
 * The console page in headless Chromium against a running mini cluster (S3, steering, edges,
 * aggregator, Kafka, console): it logs in with the one-time URL, shows the edge table and live
 * uPlot charts, its player starts a session, and it asks nothing of any host but 127.0.0.1.
 * With OCDN_SCREENSHOT=1 it saves docs/console.png (the README's picture).
 */
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintLoginUrl } from '../../console/login-client.ts';
import { batchBodies, BrowserQoe } from '../../console/public/qoe-events.js';
import type { QoeEvent } from '../../telemetry/events.ts';
import { ROOT } from '../cli-run.ts';
import { type ConsoleCluster, startConsoleCluster } from '../console/helpers.ts';
import { launchChromium } from './helpers.ts';

/** A few minutes of sessions on both edges, so the charts have lines to draw. */
async function feedQoe(aggregatorUrl: string): Promise<void> {
  const events: QoeEvent[] = [];
  const now = Date.now();
  for (let i = 0; i < 40; i++) {
    const q = new BrowserQoe({
      title: `title-000${1 + (i % 2)}`,
      sessionId: crypto.randomUUID(),
      region: i % 3 === 0 ? 'us-west' : 'us-east',
      send: (e) => events.push(e),
    });
    const t = now - 150_000 + i * 3_500;
    const edgeId = `edge-${1 + (i % 2)}`;
    q.intent(t);
    q.segment({ rendition: '730k', bitrate: 730_000, index: 0, bytes: 300_000, ttfbMs: 8, downloadMs: 90, edgeId, xCache: i % 4 ? 'HIT' : 'MISS' }, t + 100);
    q.firstFrame(t + 250 + ((i * 137) % 600), '730k', 730_000);
    if (i % 5 === 0) {
      q.stallStart(t + 2_000, 0);
      q.stallEnd(t + 2_400 + i * 10);
    }
    if (i % 7 === 0) q.error(t + 2_600, 'fragLoadError', 'networkError: fragLoadError', false);
    q.end(t + 3_400, 'aborted', 3);
  }
  for (const body of batchBodies(events)) {
    const res = await fetch(`${aggregatorUrl}/v1/events`, { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
    if (res.status !== 202) throw new Error(`POST /v1/events → ${res.status}: ${await res.text()}`);
  }
}

/**
 * What the checks below read of the page. They run inside the browser (serialized, no closure,
 * and under the page's CSP: no string evaluation), and this project compiles without DOM types.
 */
interface PageElement {
  dataset: Record<string, string | undefined>;
  textContent: string;
}
interface Win {
  document: {
    cookie: string;
    querySelectorAll(selector: string): ArrayLike<PageElement> & Iterable<PageElement>;
  };
  ocdnPlayer?: { sessionId: string | null; state: string };
}

describe('console in a browser', () => {
  let c: ConsoleCluster;
  let browser: Browser;

  beforeAll(async () => {
    [c, browser] = await Promise.all([startConsoleCluster('browser'), launchChromium()]);
    await feedQoe(c.state.aggregatorUrl);
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await c?.stop();
  }, 120_000);

  it('loads from the one-time link, shows every edge and live uPlot charts, plays nothing from a foreign host', { timeout: 120_000 }, async () => {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1500 } });
    const page = await context.newPage();
    const requests: string[] = [];
    const pageErrors: string[] = [];
    page.on('request', (r) => void requests.push(r.url()));
    page.on('pageerror', (err) => void pageErrors.push(err.message));

    const { url } = await mintLoginUrl(c.console.url, c.state.adminToken);
    await page.goto(url);
    // The token is spent and gone from the address bar; the session cookie is out of the page's reach.
    expect(page.url()).toBe(`${c.console.url}/`);
    const cookies = await context.cookies();
    expect(cookies.find((k) => k.name === 'ocdn_console')).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    expect(await page.evaluate(() => (globalThis as unknown as Win).document.cookie)).toBe('');

    await page.waitForFunction(() => (globalThis as unknown as Win).document.querySelectorAll('#edges tbody tr').length === 2, undefined, { timeout: 30_000 });
    const edges = await page.evaluate(() => [...(globalThis as unknown as Win).document.querySelectorAll('#edges tbody tr')].map((r) => r.dataset.edge));
    expect(edges).toEqual(['edge-1', 'edge-2']);
    expect(await page.textContent('#edges tbody tr:first-child')).toMatch(/up/);

    // Charts: one uPlot per metric, with a line per edge once the stream's first snapshot is in.
    await page.waitForFunction(() => (globalThis as unknown as Win).document.querySelectorAll('#charts .uplot canvas').length >= 1, undefined, {
      timeout: 30_000,
    });
    // A line per edge in each chart, named in its legend.
    await page.waitForFunction(
      () => {
        const legends = [...(globalThis as unknown as Win).document.querySelectorAll('#charts .uplot .u-legend')].map((l) => l.textContent);
        return legends.length === 10 && legends.every((t) => t.includes('edge-1') && t.includes('edge-2'));
      },
      undefined,
      { timeout: 30_000 },
    );
    expect(await page.evaluate(() => [...(globalThis as unknown as Win).document.querySelectorAll('#charts .chart')].map((e) => e.dataset.metric))).toEqual([
      'vstP50Ms',
      'vstP95Ms',
      'rebufferRatio',
      'avgBitrate',
      'errors',
      'sessions',
      'localHitBytes',
      'contentMissBytes',
      'healthMissBytes',
      'otherMissBytes',
    ]);

    // The player: a title from the catalog, a session against steering's Content Steering master.
    await page.waitForFunction(() => (globalThis as unknown as Win).document.querySelectorAll('#title-select option').length === 2);
    await page.click('#play');
    await page.waitForFunction(() => {
      const p = (globalThis as unknown as Win).ocdnPlayer;
      return Boolean(p?.sessionId) && p?.state !== 'idle';
    });
    expect(requests.some((r) => r.startsWith(`${c.state.steeringUrl}/v1/play/title-0001/master.m3u8`))).toBe(true);

    if (process.env.OCDN_SCREENSHOT === '1') {
      await page.click('#stop');
      await page.screenshot({ path: join(ROOT, 'docs', 'console.png'), fullPage: true });
    }

    const hosts = new Set(requests.map((r) => new URL(r).hostname));
    expect([...hosts]).toEqual(['127.0.0.1']);
    expect(pageErrors).toEqual([]);
    await context.close();
  });
});
