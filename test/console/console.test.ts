/**
 * The web console as `cluster up` runs it, against a real cluster: one-time login, the admin
 * token kept out of everything the browser gets, chaos behind cookie + CSRF, the cluster and
 * QoE streams, the beacon relay, /healthz and /metrics.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ConsoleCluster as ClusterView,
  ConsoleClusterSchema,
  type ConsoleSession,
  ConsoleSessionSchema,
  QoeResponseSchema,
} from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { readMetric } from '../../common/metrics.ts';
import { isAlive } from '../../common/ports.ts';
import { BrowserQoe } from '../../console/public/qoe-events.js';
import { readState } from '../../scripts/cluster/state.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { ROOT } from '../cli-run.ts';
import { expectErrorBody } from '../error-body.ts';
import { type ConsoleCluster, firstEvent, login, startConsoleCluster } from './helpers.ts';

describe('web console', () => {
  let c: ConsoleCluster;
  let base: string;
  let cookie: string;

  beforeAll(async () => {
    c = await startConsoleCluster('console');
    base = c.console.url;
    cookie = await login(c);
  }, 240_000);

  afterAll(async () => {
    await c?.stop();
  }, 120_000);

  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${base}${path}`, { headers });
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const session = async (ck = cookie): Promise<ConsoleSession> => {
    const res = await get('/api/session', { cookie: ck });
    expect(res.status).toBe(200);
    const s = (await res.json()) as ConsoleSession;
    expect(Value.Check(ConsoleSessionSchema, s)).toBe(true);
    return s;
  };

  it('answers /healthz and Prometheus /metrics with ocdn_console_* names', async () => {
    const h = await get('/healthz');
    expect(h.status).toBe(200);
    expect(await h.json()).toMatchObject({ status: 'ok' });
    const m = await (await get('/metrics')).text();
    expect(m).toMatch(/^# TYPE ocdn_console_requests_total counter$/m);
    expect(m).toMatch(/^ocdn_console_logins_total\{result="ok"\} [1-9]/m);
    expect(readMetric(m, 'ocdn_console_sessions')).toBeGreaterThanOrEqual(1);
    expect(m).toMatch(/^process_cpu_seconds_total /m);
  });

  it('cluster up printed a login URL; a login token works once, then 403, and the cookie is HttpOnly SameSite=Strict', async () => {
    expect(c.console.loginUrl).toMatch(new RegExp(`^${base}/\\?login=[A-Za-z0-9_-]{43}$`));
    const first = await fetch(c.console.loginUrl!, { redirect: 'manual' });
    expect(first.status).toBe(302);
    expect(first.headers.get('location')).toBe('/');
    const setCookie = first.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/^ocdn_console=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    await session(setCookie.split(';')[0]!);
    const again = await fetch(c.console.loginUrl!, { redirect: 'manual' });
    expect(again.status).toBe(403);
    expectErrorBody(await again.text(), 'E_FORBIDDEN', /already used/);
    const forged = await fetch(`${base}/?login=${'A'.repeat(43)}`, { redirect: 'manual' });
    expect(forged.status).toBe(403);
    // Minting takes the admin token.
    expect((await fetch(`${base}/api/login-tokens`, { method: 'POST' })).status).toBe(401);
    const wrong = await fetch(`${base}/api/login-tokens`, { method: 'POST', headers: { authorization: 'Bearer not-the-admin-token' } });
    expect(wrong.status).toBe(401);
    expectErrorBody(await wrong.text(), 'E_UNAUTHORIZED');
    // Without a session every API answers 401 with the common error body.
    for (const path of ['/api/session', '/api/cluster', '/api/cluster/stream', '/api/qoe/stream?by=edge', '/api/catalog']) {
      const r = await get(path);
      expect(r.status, path).toBe(401);
      expectErrorBody(await r.text(), 'E_UNAUTHORIZED');
    }
  });

  it('no served page, asset or API answer holds the admin token (or any other cluster secret)', async () => {
    const secrets = [c.state.adminToken, c.state.tokenSecret, c.state.edgeKey!];
    const served = new Set<string>(['/']);
    const index = await (await get('/')).text();
    for (const m of index.matchAll(/(?:src|href)="([^"]+)"/g)) served.add(m[1]!);
    for (const f of readdirSync(join(ROOT, 'console', 'public'))) if (!f.endsWith('.d.ts')) served.add(`/${f}`);
    expect([...served]).toEqual(expect.arrayContaining(['/vendor/hls.min.js', '/vendor/uPlot.iife.min.js', '/vendor/uPlot.min.css', '/app.js', '/player.js']));
    const bodies: [string, string][] = [];
    for (const path of served) {
      const res = await get(path, { cookie });
      expect(res.status, path).toBe(200);
      // Nothing the page loads comes from another host.
      const text = await res.text();
      if (!path.startsWith('/vendor/')) expect(text, path).not.toMatch(/(?:src|href|from)\s*=?\s*["']https?:\/\//);
      bodies.push([path, text]);
    }
    for (const path of ['/api/session', '/api/cluster', '/api/catalog']) bodies.push([path, await (await get(path, { cookie })).text()]);
    bodies.push(['/api/cluster/stream', JSON.stringify(await firstEvent(`${base}/api/cluster/stream`, 'cluster', { cookie }))]);
    for (const [path, text] of bodies) for (const s of secrets) expect(text.includes(s), `${path} holds a secret`).toBe(false);
    // The page is served with a policy that allows no inline script and no foreign script.
    expect((await get('/')).headers.get('content-security-policy')).toMatch(/script-src 'self';/);
  });

  it('streams the cluster: every edge with health, load, hit ratio and bytes from its /metrics', async () => {
    const snap = await firstEvent<ClusterView>(`${base}/api/cluster/stream`, 'cluster', { cookie });
    expect(Value.Check(ConsoleClusterSchema, snap), JSON.stringify(snap).slice(0, 500)).toBe(true);
    expect(snap.steeringError).toBeUndefined();
    expect(snap.edges.map((e) => e.id)).toEqual(['edge-1', 'edge-2']);
    for (const e of snap.edges) {
      expect(e.healthy).toBe(true);
      expect(e.metricsError).toBeUndefined();
      expect(e.bytesServed).toBeGreaterThan(0); // steering's probes are answered bytes too
    }
  });

  it("relays the aggregator's QoE stream, one upstream per query however many pages watch; a bad query is the aggregator's 400", async () => {
    const [a, b] = await Promise.all([
      firstEvent(`${base}/api/qoe/stream?by=edge&last=5m`, 'qoe', { cookie }),
      firstEvent(`${base}/api/qoe/stream?last=5m&by=edge&ignored=1`, 'qoe', { cookie }),
    ]);
    for (const r of [a, b]) expect(Value.Check(QoeResponseSchema, r)).toBe(true);
    expect(a).toMatchObject({ by: 'edge' });
    const m = await (await get('/metrics')).text();
    expect(readMetric(m, 'ocdn_console_qoe_upstreams')).toBeLessThanOrEqual(1);
    const bad = await get('/api/qoe/stream?by=nope', { cookie });
    expect(bad.status).toBe(400);
    expectErrorBody(await bad.text(), 'E_BAD_REQUEST', /by/);
    // Pages gone: the upstream closes too.
    await waitFor(async () => readMetric(await (await get('/metrics')).text(), 'ocdn_console_qoe_upstreams') === 0, {
      timeoutMs: 10_000,
      what: 'the relay to close',
    });
  });

  it('relays browser QoE beacons to the aggregator, which counts them under device "browser"', async () => {
    const events: QoeEvent[] = [];
    const q = new BrowserQoe({ title: 'title-0001', sessionId: crypto.randomUUID(), send: (e) => events.push(e) });
    const t = Date.now() - 5_000;
    q.intent(t);
    q.segment({ rendition: '730k', bitrate: 730_000, index: 0, bytes: 100_000, ttfbMs: 5, downloadMs: 50, edgeId: 'edge-1', xCache: 'HIT' }, t + 60);
    q.firstFrame(t + 300, '730k', 730_000);
    q.end(t + 4_000, 'aborted', 3.7);
    const body = JSON.stringify({ events });
    expect((await fetch(`${base}/api/events`, { method: 'POST', body, headers: { 'content-type': 'text/plain' } })).status).toBe(401);
    const res = await fetch(`${base}/api/events`, { method: 'POST', body, headers: { 'content-type': 'text/plain', cookie } });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: events.length, invalid: 0 });
    await waitFor(
      async () => {
        const r = (await (await fetch(`${c.state.aggregatorUrl}/v1/qoe?by=device&last=1h`)).json()) as { totals: { value: string; sessions: number }[] };
        return r.totals.find((x) => x.value === 'browser' && x.sessions === 1);
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'the aggregator to count the browser session' },
    );
  });

  it('chaos needs the session cookie and its CSRF token, and then kills and restores an edge and the origin as `ocdn chaos` does', {
    timeout: 120_000,
  }, async () => {
    const s = await session();
    const none = await post('/api/chaos/kill-edge', { id: 'edge-2' });
    expect(none.status).toBe(401);
    expectErrorBody(await none.text(), 'E_UNAUTHORIZED');
    const noCsrf = await post('/api/chaos/kill-edge', { id: 'edge-2' }, { cookie });
    expect(noCsrf.status).toBe(403);
    expectErrorBody(await noCsrf.text(), 'E_FORBIDDEN', /x-csrf-token/);
    const badCsrf = await post('/api/chaos/kill-edge', { id: 'edge-2' }, { cookie, 'x-csrf-token': `${s.csrfToken}x` });
    expect(badCsrf.status).toBe(403);
    // The CSRF token of the session, not any: another session's token does not pass.
    const other = await session(await login(c));
    expect((await post('/api/chaos/kill-edge', { id: 'edge-2' }, { cookie, 'x-csrf-token': other.csrfToken })).status).toBe(403);
    const badBody = await post('/api/chaos/kill-edge', { id: '../etc' }, { cookie, 'x-csrf-token': s.csrfToken });
    expect(badBody.status).toBe(400);
    expectErrorBody(await badBody.text(), 'E_BAD_REQUEST');
    const before = (await readState(c.dir))!.components.find((x) => x.name === 'edge-2')!;
    expect(isAlive(before.pid)).toBe(true);

    const ok = { cookie, 'x-csrf-token': s.csrfToken };
    const kill = await post('/api/chaos/kill-edge', { id: 'edge-2' }, ok);
    expect(kill.status).toBe(200);
    const killed = (await kill.json()) as { log: string[] };
    expect(killed.log.join('\n')).toMatch(/killed edge-2 .*SIGKILL/);
    expect(isAlive(before.pid)).toBe(false);
    expect((await readState(c.dir))!.components.find((x) => x.name === 'edge-2')!.held).toBeDefined();
    const down = await waitFor(
      async () => (await firstEvent<ClusterView>(`${base}/api/cluster/stream`, 'cluster', { cookie })).edges.find((e) => e.id === 'edge-2' && !e.healthy),
      { timeoutMs: 20_000, intervalMs: 200, what: 'the cluster view to show edge-2 down' },
    );
    expect(down.healthy).toBe(false);

    const restore = await post('/api/chaos/restore', { id: 'edge-2' }, ok);
    expect(restore.status, await restore.clone().text()).toBe(200);
    const after = (await readState(c.dir))!.components.find((x) => x.name === 'edge-2')!;
    expect(after.held).toBeUndefined();
    expect(isAlive(after.pid)).toBe(true);

    const s3 = () => readState(c.dir).then((st) => st!.components.find((x) => x.kind === 's3')!);
    const on = await post('/api/chaos/origin-outage', { on: true }, ok);
    expect(on.status).toBe(200);
    expect(isAlive((await s3()).pid)).toBe(false);
    expect((await s3()).held).toBeDefined();
    const off = await post('/api/chaos/origin-outage', { on: false }, ok);
    expect(off.status).toBe(200);
    expect(isAlive((await s3()).pid)).toBe(true);
    const m = await (await get('/metrics')).text();
    expect(readMetric(m, 'ocdn_console_chaos_actions_total', { result: 'ok' })).toBe(4);
  });
});
