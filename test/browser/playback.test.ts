/**
 * hls.js in Debian's Chromium, as a viewer would run it: the console page on its own origin (no
 * --disable-web-security), playing a decodable (ffmpeg-mode) title from steering's Content
 * Steering master across three edge pathways. The test SIGKILLs the edge serving it; hls.js
 * must move to another pathway by itself and the playhead keep advancing. The page's QoE
 * beacons must reach the aggregator as a `browser` device, and the bytes it got be classified
 * against its steering decision (none unmatched).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog, QoeResponse } from '../../common/contracts.ts';
import { waitFor } from '../../common/retry.ts';
import { mintLoginUrl } from '../../console/login-client.ts';
import { findFfmpeg } from '../../origin/ffmpeg.ts';
import { importTitle } from '../../origin/import.ts';
import { clusterS3Client } from '../../scripts/catalog-client.ts';
import { killEdge } from '../../scripts/chaos.ts';
import { type ConsoleCluster, startConsoleCluster } from '../console/helpers.ts';
import { ROOT } from '../cli-run.ts';
import { packageClip } from '../origin/clips.ts';
import { launchChromium } from './helpers.ts';

interface Fragment {
  sn: number;
  pathway: string | null;
  edgeId: string | null;
  xCache: string | null;
}
interface PlayerState {
  title: string | null;
  state: string;
  currentTime: number;
  fragments: Fragment[];
  pathways: { kind: string; pathway: string | null; priority?: string[]; ttl?: number }[];
  errors: { details: string; fatal: boolean }[];
  sessionId: string | null;
  events: { sent: number; failed: number };
}
/** This project compiles without DOM types; the page's state is read through this. */
type Win = { ocdnPlayer?: PlayerState };

const player = (page: Page) => page.evaluate(() => JSON.parse(JSON.stringify((globalThis as unknown as Win).ocdnPlayer ?? null)) as PlayerState | null);

describe('hls.js in Chromium through Content Steering', () => {
  let c: ConsoleCluster;
  let browser: Browser;

  beforeAll(async () => {
    [c, browser] = await Promise.all([startConsoleCluster('playback', 3, { titles: 1, titleDurationSec: 60, mode: 'ffmpeg' }), launchChromium()]);
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    await c?.stop();
  }, 120_000);

  it('plays 10 s, survives a SIGKILL of its edge on another pathway, and reports as a browser', { timeout: 180_000 }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => void pageErrors.push(err.message));

    const { url } = await mintLoginUrl(c.console.url, c.state.adminToken);
    await page.goto(url);
    expect(new URL(page.url()).origin).not.toBe(new URL(c.state.steeringUrl).origin);
    await page.waitForSelector('#title-select option[value="title-0001"]', { state: 'attached', timeout: 30_000 });
    await page.click('#play');

    // Ten seconds of real playback: frames decoded, so CORS, tokens and the codecs all held.
    const played = await waitFor(
      async () => {
        const p = await player(page);
        if (p?.errors.some((e) => e.fatal)) throw new Error(`player failed: ${JSON.stringify(p.errors)}`);
        return p && p.state === 'playing' && p.currentTime >= 10 ? p : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'hls.js to play 10 s' },
    );
    const serving = played.fragments.at(-1)!;
    // The edge's own headers are readable across origins (Access-Control-Expose-Headers).
    expect(serving.edgeId).toMatch(/^edge-\d$/);
    expect(serving.pathway).toBe(serving.edgeId);
    expect(['HIT', 'MISS', 'COALESCED']).toContain(serving.xCache);
    const lastSnBefore = serving.sn;

    await killEdge(c.dir, { id: serving.edgeId!, log: () => undefined });
    const killedAt = played.currentTime;

    // hls.js alone must find another pathway: fragments after the kill come from a live edge,
    // and the playhead goes on well past where it was.
    let seen: PlayerState | null = null;
    const after = await waitFor(
      async () => {
        const p = await player(page);
        seen = p;
        if (p?.errors.some((e) => e.fatal)) throw new Error(`player failed after the kill: ${JSON.stringify(p.errors)}`);
        const moved = p?.fragments.filter((f) => f.sn > lastSnBefore && f.edgeId && f.edgeId !== serving.edgeId) ?? [];
        return p && moved.length >= 2 && p.currentTime >= killedAt + 8 ? { p, moved } : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 250, what: `playback to continue from another pathway after ${serving.edgeId} was killed` },
    ).catch((err: Error) => {
      const p = seen as PlayerState | null;
      throw new Error(`${err.message}; player: ${JSON.stringify({ ...p, fragments: p?.fragments.slice(-6) })}`);
    });
    expect(after.p.state === 'playing' || after.p.state === 'ended').toBe(true);
    expect(after.moved.every((f) => f.pathway === f.edgeId)).toBe(true);
    expect(new Set(after.moved.map((f) => f.edgeId)).has(serving.edgeId)).toBe(false);

    // hls.js reloads the steering manifest at its TTL (RELOAD-URI); once steering has the kill,
    // the manifest it gets ranks the dead pathway out.
    const reloaded = await waitFor(
      async () => (await player(page))?.pathways.find((m) => m.kind === 'steering-manifest' && m.priority && !m.priority.includes(serving.edgeId!)),
      { timeoutMs: 45_000, intervalMs: 250, what: `a steering manifest reload without ${serving.edgeId}` },
    );
    expect(reloaded.priority!.length).toBe(2);

    console.log(
      `killed ${serving.edgeId} at currentTime ${killedAt.toFixed(1)} s; playback went on to ${after.p.currentTime.toFixed(1)} s from ${[...new Set(after.moved.map((f) => f.edgeId))].join(', ')} (fragments ${after.moved.map((f) => f.sn).join(',')})`,
    );
    if (process.env.OCDN_SCREENSHOT === '1') await page.screenshot({ path: join(ROOT, 'docs', 'console-playback.png'), fullPage: true });

    // The browser's session reaches the aggregator's view as a `browser` device.
    await page.click('#stop');
    await waitFor(
      async () => {
        const res = await fetch(`${c.state.aggregatorUrl}/v1/qoe?by=device&last=1h`);
        const q = (await res.json()) as QoeResponse;
        return q.totals.some((r) => r.value === 'browser' && r.sessions >= 1);
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'the browser session in /v1/qoe?by=device' },
    );
    // Its bytes are classified: every edge access of hls.js names the steering session in its
    // path token (hls.js's CMCD sid is its own), so each one joins the decision of /v1/play.
    const joined = await waitFor(
      async () => {
        const q = (await (await fetch(`${c.state.aggregatorUrl}/v1/qoe?by=all&last=1h`)).json()) as QoeResponse;
        const t = q.totals[0];
        return t && t.localHitBytes + t.contentMissBytes + t.healthMissBytes + t.otherMissBytes > 0 ? t : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'classified bytes of the browser session in /v1/qoe' },
    );
    expect({ unmatched: joined.unmatchedAccesses, unmatchedBytes: joined.unmatchedAccessBytes }).toEqual({ unmatched: 0, unmatchedBytes: 0 });
    expect(pageErrors).toEqual([]);
    await context.close();
  });
  it('plays titles packaged by ffmpeg and imported (mpegts + AES-128, fMP4 with EXT-X-MAP, single-file byte ranges)', { timeout: 180_000 }, async () => {
    const work = await mkdtemp(join(tmpdir(), 'ocdn-clips-'));
    const client = clusterS3Client(c.state.s3Endpoint);
    const clips = [
      { id: 'clip-aes', kind: 'aes' },
      { id: 'clip-fmp4', kind: 'fmp4' },
      { id: 'clip-range', kind: 'single-file' },
    ] as const;
    try {
      const ffmpeg = await findFfmpeg();
      await Promise.all(clips.map((k) => packageClip(ffmpeg, join(work, k.id), k.kind, 'master.m3u8')));
      for (const k of clips) await importTitle({ client, bucket: c.state.bucket, title: k.id, fromDir: join(work, k.id), master: 'master.m3u8' });
    } finally {
      client.destroy();
      await rm(work, { recursive: true, force: true });
    }
    // Steering re-reads the catalog on its own clock; a steer for an unknown title makes it look now.
    await waitFor(
      async () => {
        await (await fetch(`${c.state.steeringUrl}/v1/steer?title=${clips[2].id}`)).arrayBuffer();
        const cat = (await (await fetch(`${c.state.steeringUrl}/v1/catalog`)).json()) as Catalog;
        return clips.every((k) => cat.titles.some((t) => t.id === k.id));
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'steering to list the imported titles' },
    );

    const context = await browser.newContext();
    const page = await context.newPage();
    const { url } = await mintLoginUrl(c.console.url, c.state.adminToken);
    await page.goto(url);
    for (const k of clips) {
      await page.waitForSelector(`#title-select option[value="${k.id}"]`, { state: 'attached', timeout: 30_000 });
      await page.selectOption('#title-select', k.id);
      await page.click('#play');
      // The clips last 3 s: decoded frames up to their end, through an edge, with no fatal error.
      const p = await waitFor(
        async () => {
          const s = await player(page);
          if (s?.errors.some((e) => e.fatal)) throw new Error(`${k.id}: player failed: ${JSON.stringify(s.errors)}`);
          return s && s.title === k.id && (s.state === 'ended' || s.currentTime >= 2.5) ? s : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 250, what: `hls.js to play ${k.id}` },
      );
      expect(p.fragments.length, k.id).toBeGreaterThan(0);
      expect(
        p.fragments.every((f) => f.edgeId !== null && f.pathway === f.edgeId),
        k.id,
      ).toBe(true);
      await page.click('#stop');
    }
    await context.close();
  });
});
