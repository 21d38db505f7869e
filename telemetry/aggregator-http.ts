import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { QoeResponse } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { sendError, sendJson, sendMethodNotAllowed, statusOf } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { sendMetrics } from '../common/metrics.ts';
import type { Ingest } from './ingest.ts';
import type { QoeStreams } from './qoe-stream.ts';
import { type AggregateView, parseQoeQuery } from './view.ts';
import type { WindowOptions } from './windows.ts';

/** The /v1/qoe answer for a query: the one computation behind /v1/qoe and /v1/qoe/stream. */
export function qoeResponse(view: AggregateView, windows: WindowOptions, params: URLSearchParams): QoeResponse {
  const q = parseQoeQuery(params, windows.windowMs);
  return { ...view.query(q), baseWindowMs: windows.windowMs, graceMs: windows.graceMs };
}

/** The aggregator's HTTP side: /v1/qoe (and its live stream) from the read side, the beacon ingest, health and metrics. */
export function aggregatorRoutes(ctx: {
  view: AggregateView;
  windows: WindowOptions;
  registry: Registry;
  /** POST /v1/events; 404 when the ingest is off. */
  ingest?: Ingest;
  streams: QoeStreams;
  /** The /healthz body; 503 when `ok` is false. */
  health: () => { ok: boolean } & Record<string, unknown>;
  log: Logger;
}): RequestListener {
  const { view, windows, registry, health, log, ingest, streams } = ctx;

  function qoe(_req: IncomingMessage, res: ServerResponse, params: URLSearchParams): void {
    sendJson(res, 200, qoeResponse(view, windows, params));
  }

  function healthz(_req: IncomingMessage, res: ServerResponse): void {
    const h = health();
    sendJson(res, h.ok ? 200 : 503, h);
  }

  /** Exact paths, GET unless `methods` says otherwise; add a route with one line here. */
  const routes = new Map<string, (req: IncomingMessage, res: ServerResponse, params: URLSearchParams) => void | Promise<void>>([
    ['/v1/qoe', qoe],
    ['/v1/qoe/stream', (req, res, params) => streams.open(req, res, params)],
    ...(ingest ? [['/v1/events', (req: IncomingMessage, res: ServerResponse) => ingest.handle(req, res)] as const] : []),
    ['/healthz', healthz],
    ['/metrics', (_req, res) => sendMetrics(res, registry)],
  ]);
  /** The methods of routes that take something other than GET and HEAD. */
  const methods = new Map<string, string>([['/v1/events', 'POST']]);

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
      return fail(
        new OcdnError(
          ErrorCodes.NOT_FOUND,
          `not found: ${path.slice(0, 200)} (try /v1/qoe?by=edge&window=10s&last=5m, /v1/qoe/stream?by=edge&last=5m, ${ingest ? 'POST /v1/events, ' : ''}/healthz, /metrics)`,
        ),
      );
    const allow = methods.get(path) ?? 'GET, HEAD';
    if (!allow.split(', ').includes(req.method ?? '')) return void sendMethodNotAllowed(res, req.method, allow);
    try {
      const done = route(req, res, new URLSearchParams(qi === -1 ? '' : raw.slice(qi + 1)));
      if (done !== undefined) done.catch(fail);
    } catch (err) {
      fail(err);
    }
  };
}
