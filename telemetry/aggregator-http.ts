import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { QoeResponse } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { sendError, sendJson, sendMethodNotAllowed, statusOf } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { sendMetrics } from '../common/metrics.ts';
import { type AggregateView, parseQoeQuery } from './view.ts';
import type { WindowOptions } from './windows.ts';

/** The aggregator's HTTP side: /v1/qoe from the read side, health and metrics. */
export function aggregatorRoutes(ctx: {
  view: AggregateView;
  windows: WindowOptions;
  registry: Registry;
  /** The /healthz body; 503 when `ok` is false. */
  health: () => { ok: boolean } & Record<string, unknown>;
  log: Logger;
}): RequestListener {
  const { view, windows, registry, health, log } = ctx;

  function qoe(_req: IncomingMessage, res: ServerResponse, params: URLSearchParams): void {
    const q = parseQoeQuery(params, windows.windowMs);
    const body: QoeResponse = { ...view.query(q), baseWindowMs: windows.windowMs, graceMs: windows.graceMs };
    sendJson(res, 200, body);
  }

  function healthz(_req: IncomingMessage, res: ServerResponse): void {
    const h = health();
    sendJson(res, h.ok ? 200 : 503, h);
  }

  /** Exact paths, all GET; add a route with one line here. */
  const routes = new Map<string, (req: IncomingMessage, res: ServerResponse, params: URLSearchParams) => void | Promise<void>>([
    ['/v1/qoe', qoe],
    ['/healthz', healthz],
    ['/metrics', (_req, res) => sendMetrics(res, registry)],
  ]);

  return (req, res) => {
    const raw = req.url ?? '/';
    const qi = raw.indexOf('?');
    const path = qi === -1 ? raw : raw.slice(0, qi);
    const route = routes.get(path);
    const fail = (err: unknown) => {
      if (statusOf(err) >= 500) log.error({ err: describeError(err), url: raw.slice(0, 200) }, 'request failed');
      sendError(res, err);
    };
    if (route === undefined)
      return fail(new OcdnError(ErrorCodes.NOT_FOUND, `not found: ${path.slice(0, 200)} (try /v1/qoe?by=edge&window=10s&last=5m, /healthz, /metrics)`));
    if (req.method !== 'GET' && req.method !== 'HEAD') return void sendMethodNotAllowed(res, req.method, 'GET, HEAD');
    try {
      const done = route(req, res, new URLSearchParams(qi === -1 ? '' : raw.slice(qi + 1)));
      if (done !== undefined) done.catch(fail);
    } catch (err) {
      fail(err);
    }
  };
}
