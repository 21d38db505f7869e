import { Agent, request } from 'undici';
import { type EdgeHeartbeat, EdgeHeartbeatSchema, type EdgeState, type EdgeStatus } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { bodyValidator } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { TitleBloom } from './inventory.ts';
import type { EdgeView } from './policies.ts';

/**
 * The edges steering knows: pushed heartbeats (load, inventory, self-reported health) plus
 * active probes of each edge's /healthz. An edge is out after `missedHeartbeats` silent
 * intervals, after `fall` failed probes in a row, or at once when it says it is unhealthy
 * (draining); it is back only after `rise` good observations in a row (rise/fall hysteresis,
 * as load balancers do, so a flapping edge does not flap the answers).
 *
 * Only admitted beats get here (steering/routes.ts checks their signature first), and even an
 * admitted new id, or one that moved to a new URL, is out until `rise` good probes of that URL:
 * a beat proves the edge can reach us, not that players can reach it. State is bounded: at most
 * `maxEdges` records of a fixed size (the inventory is a Bloom filter), silent ones dropped after
 * `forgetAfterMs`.
 */

export interface RegistryOptions {
  /** Interval edges heartbeat at (their --heartbeat-interval). */
  heartbeatIntervalMs?: number;
  missedHeartbeats?: number;
  /** 0 turns active probes off. */
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** Failed probes in a row that take an edge out. */
  fall?: number;
  /** Good observations (probe or heartbeat) in a row that bring an edge back. */
  rise?: number;
  /** A silent edge is dropped from the registry after this long. */
  forgetAfterMs?: number;
  /** Records kept at most; a beat of a new id past it is refused (E_TOO_MANY). */
  maxEdges?: number;
  /**
   * Load added per session steered to an edge until its next heartbeat, in the unit of the
   * reported load (egress bit/s): without it, every session of a burst goes to the same edge
   * for a whole heartbeat interval. 0 turns it off.
   */
  sessionLoadBps?: number;
  /** Replaces the HTTP probe (tests): resolves true when healthy, or a reason string when not. */
  probe?: (edge: { id: string; url: string }, timeoutMs: number) => Promise<true | string>;
  now?: () => number;
  log?: Logger;
}

export type { EdgeState, EdgeStatus } from '../common/contracts.ts';

interface EdgeRecord {
  hb: EdgeHeartbeat;
  view: EdgeView;
  up: boolean;
  reason: string;
  since: number;
  lastBeatAt: number;
  goodStreak: number;
  badProbes: number;
  steered: number;
  probing: boolean;
  lastProbe?: { at: number; ok: boolean; error?: string };
}

// Compiled once, here, where heartbeats are received.
const checkHeartbeat = bodyValidator(EdgeHeartbeatSchema, 'heartbeat');

/**
 * Checks a heartbeat body against its contract (EdgeHeartbeatSchema: patterns, URL form,
 * finite non-negative numbers, at most HEARTBEAT_LIMITS titles); throws OcdnError(BAD_REQUEST)
 * naming every wrong field. The result holds only the contract's fields, its URL without a
 * trailing slash.
 */
export function validateHeartbeat(raw: unknown): EdgeHeartbeat {
  const b = checkHeartbeat(raw);
  return {
    id: b.id,
    url: b.url.replace(/\/+$/, ''),
    region: b.region,
    capacityBytes: b.capacityBytes,
    usedBytes: b.usedBytes,
    inFlight: b.inFlight,
    rps: b.rps,
    egressBps: b.egressBps,
    healthy: b.healthy,
    titles: b.titles,
    ts: b.ts,
    ...(b.parent !== undefined ? { parent: b.parent } : {}),
  };
}

export class EdgeRegistry {
  private readonly edges = new Map<string, EdgeRecord>();
  private healthyCache: EdgeView[] | undefined;
  private downCache: EdgeView[] | undefined;
  private readonly hbIntervalMs: number;
  private readonly staleAfterMs: number;
  private readonly probeIntervalMs: number;
  private readonly probeTimeoutMs: number;
  private readonly fall: number;
  private readonly rise: number;
  private readonly forgetAfterMs: number;
  private readonly maxEdges: number;
  private readonly sessionLoadBps: number;
  private readonly now: () => number;
  private readonly log: Logger | undefined;
  private readonly probeFn: (edge: { id: string; url: string }, timeoutMs: number) => Promise<true | string>;
  private agent: Agent | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private changedAt: number;
  /** Called on every up/down transition (metrics, logs, QoE hooks). */
  onChange: ((id: string, state: EdgeState, reason: string) => void) | undefined;

  constructor(opts: RegistryOptions = {}) {
    this.hbIntervalMs = opts.heartbeatIntervalMs ?? 1_000;
    const missed = opts.missedHeartbeats ?? 3;
    // Half an interval of slack so a beat that is a few ms late is not counted as missed.
    this.staleAfterMs = missed * this.hbIntervalMs + this.hbIntervalMs / 2;
    this.probeIntervalMs = opts.probeIntervalMs ?? 1_000;
    this.probeTimeoutMs = opts.probeTimeoutMs ?? Math.max(100, Math.min(1_000, this.probeIntervalMs || 1_000));
    this.fall = Math.max(1, opts.fall ?? 3);
    this.rise = Math.max(1, opts.rise ?? 2);
    this.forgetAfterMs = opts.forgetAfterMs ?? 300_000;
    this.maxEdges = Math.max(1, opts.maxEdges ?? 1_024);
    this.sessionLoadBps = opts.sessionLoadBps ?? 2_000_000;
    this.now = opts.now ?? Date.now;
    this.log = opts.log;
    this.probeFn = opts.probe ?? ((edge, timeoutMs) => this.httpProbe(edge.url, timeoutMs));
    this.changedAt = this.now();
  }

  /** When the set of healthy edges (or a healthy edge's URL) last changed, ms. */
  get lastChangeAt(): number {
    return this.changedAt;
  }

  /** When a healthy edge came up (ms); undefined for an edge that is out or unknown. */
  upSince(id: string): number | undefined {
    const rec = this.edges.get(id);
    return rec?.up ? rec.since : undefined;
  }

  /** Starts the staleness check and the probes (timers are unref'd). */
  start(): void {
    if (this.checkTimer || this.closed) return;
    this.checkTimer = setInterval(() => this.checkStale(), Math.max(10, Math.floor(this.hbIntervalMs / 4)));
    this.checkTimer.unref();
    if (this.probeIntervalMs > 0) {
      this.probeTimer = setInterval(() => void this.probeAll(), this.probeIntervalMs);
      this.probeTimer.unref();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.checkTimer) clearInterval(this.checkTimer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.checkTimer = this.probeTimer = undefined;
    const agent = this.agent;
    this.agent = undefined;
    await agent?.destroy();
  }

  /**
   * Applies a validated, admitted heartbeat; returns the edge's state afterwards. A new id past
   * `maxEdges` records is refused with E_TOO_MANY.
   */
  heartbeat(beat: EdgeHeartbeat): EdgeState {
    const now = this.now();
    const titles = new TitleBloom(beat.titles);
    // The list itself is not kept: the filter is the inventory.
    const hb: EdgeHeartbeat = { ...beat, titles: [] };
    let rec = this.edges.get(hb.id);
    if (!rec) {
      if (this.edges.size >= this.maxEdges) this.checkStale();
      if (this.edges.size >= this.maxEdges)
        throw new OcdnError(ErrorCodes.TOO_MANY, `edge registry full (${this.maxEdges} edges): edge "${hb.id}" not registered`);
      rec = {
        hb,
        view: { id: hb.id, url: hb.url, region: hb.region, load: hb.egressBps, titles },
        up: false,
        reason: hb.healthy ? 'new: waiting for good probes' : 'edge reports unhealthy',
        since: now,
        lastBeatAt: now,
        goodStreak: 0,
        badProbes: 0,
        steered: 0,
        probing: false,
      };
      this.edges.set(hb.id, rec);
      this.downCache = undefined;
      this.log?.info({ edge: hb.id, url: hb.url, region: hb.region }, 'edge admitted');
      if (hb.healthy) this.observeNew(rec, 'first heartbeat');
      return rec.up ? 'up' : 'down';
    }
    rec.hb = hb;
    rec.lastBeatAt = now;
    rec.steered = 0;
    rec.view.load = hb.egressBps;
    rec.view.titles = titles;
    if (rec.view.url !== hb.url || rec.view.region !== hb.region) {
      const moved = rec.view.url !== hb.url;
      rec.view.url = hb.url;
      rec.view.region = hb.region;
      this.healthyChanged();
      if (moved) {
        // The old URL's probes say nothing about the new one: out until it earns its rise.
        this.log?.info({ edge: hb.id, url: hb.url }, 'edge moved to a new URL');
        rec.badProbes = 0;
        rec.lastProbe = undefined;
        if (rec.up) this.setState(rec, false, 'moved to a new URL: waiting for good probes');
        rec.goodStreak = 0;
        if (hb.healthy) return this.observeNew(rec, 'heartbeat from the new URL') ? 'up' : 'down';
      }
    }
    if (!hb.healthy) {
      rec.goodStreak = 0;
      if (rec.up) this.setState(rec, false, 'edge reports unhealthy (draining)');
      else rec.reason = 'edge reports unhealthy (draining)';
    } else if (this.probeIntervalMs === 0) {
      // With probes on, only probes count towards rise: a heartbeat proves the edge can reach
      // us, not that we (and players) can reach it.
      this.good(rec, 'heartbeats');
    }
    return rec.up ? 'up' : 'down';
  }

  /**
   * A new (or moved) edge's first healthy beat: with probes off it is the first good
   * observation; with probes on a probe goes out at once rather than at the next round.
   */
  private observeNew(rec: EdgeRecord, why: string): boolean {
    if (this.probeIntervalMs === 0) this.good(rec, why);
    else if (this.probeTimer !== undefined) void this.probeOne(rec);
    return rec.up;
  }

  /** Healthy edges as policy input. The same array until something changes (hot path). */
  healthy(): readonly EdgeView[] {
    this.healthyCache ??= [...this.edges.values()].filter((r) => r.up).map((r) => r.view);
    return this.healthyCache;
  }

  /** Registered edges that are out: decision records name them as skipped. The same array until something changes. */
  unhealthy(): readonly EdgeView[] {
    this.downCache ??= [...this.edges.values()].filter((r) => !r.up).map((r) => r.view);
    return this.downCache;
  }

  get size(): number {
    return this.edges.size;
  }

  /** Load one steered session adds (policy input `loadQuantum`). */
  get sessionLoad(): number {
    return this.sessionLoadBps;
  }

  /** Counts a session steered to `id` into its load until the edge's next heartbeat. */
  noteSteered(id: string): void {
    const rec = this.edges.get(id);
    if (!rec || this.sessionLoadBps === 0) return;
    rec.steered++;
    rec.view.load = rec.hb.egressBps + rec.steered * this.sessionLoadBps;
  }

  /** QoE feedback hook: a demoted edge ranks after the others of its tier (hrw-bounded). */
  setDemoted(id: string, demoted: boolean): boolean {
    const rec = this.edges.get(id);
    if (!rec) return false;
    if (demoted) rec.view.demoted = true;
    else delete rec.view.demoted;
    return true;
  }

  status(id: string): EdgeStatus | undefined {
    const rec = this.edges.get(id);
    return rec ? this.toStatus(rec, this.now()) : undefined;
  }

  /** Every edge; with `holds`, each row also says which of those titles its inventory holds (the fill controller's diff). */
  list(holds?: readonly string[]): EdgeStatus[] {
    const now = this.now();
    return [...this.edges.values()]
      .map((r) => (holds ? { ...this.toStatus(r, now), holds: holds.filter((t) => r.view.titles.has(t)) } : this.toStatus(r, now)))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  counts(): { up: number; down: number } {
    let up = 0;
    for (const r of this.edges.values()) if (r.up) up++;
    return { up, down: this.edges.size - up };
  }

  /** Marks silent edges out and forgets long-gone ones. Public so tests with a fake clock can drive it. */
  checkStale(): void {
    const now = this.now();
    for (const rec of this.edges.values()) {
      const silent = now - rec.lastBeatAt;
      if (silent > this.forgetAfterMs) {
        this.edges.delete(rec.hb.id);
        this.healthyChanged();
        this.log?.info({ edge: rec.hb.id, silentMs: silent }, 'edge forgotten');
        continue;
      }
      if (silent > this.staleAfterMs) {
        // "In a row": a silence breaks a run of good observations of an edge that is out, too.
        rec.goodStreak = 0;
        if (rec.up) this.setState(rec, false, `missed heartbeats (none for ${silent} ms)`);
      }
    }
  }

  /** One probe round over every known edge; public for tests. Probes of one edge never overlap. */
  async probeAll(): Promise<void> {
    await Promise.all([...this.edges.values()].map((rec) => this.probeOne(rec)));
  }

  private async probeOne(rec: EdgeRecord): Promise<void> {
    if (rec.probing || this.closed) return;
    rec.probing = true;
    const url = rec.view.url;
    let result: true | string;
    try {
      result = await this.probeFn({ id: rec.hb.id, url }, this.probeTimeoutMs);
    } catch (err) {
      result = err instanceof Error ? err.message : String(err);
    } finally {
      rec.probing = false;
    }
    // The edge may have moved (restart on a new port) or been forgotten while we waited.
    if (this.closed || this.edges.get(rec.hb.id) !== rec || rec.view.url !== url) return;
    const now = this.now();
    if (result === true) {
      rec.badProbes = 0;
      rec.lastProbe = { at: now, ok: true };
      this.good(rec, 'probes pass');
    } else {
      rec.badProbes++;
      rec.goodStreak = 0;
      rec.lastProbe = { at: now, ok: false, error: result };
      if (rec.up && rec.badProbes >= this.fall) this.setState(rec, false, `${rec.badProbes} failed probes of /healthz (${result})`);
    }
  }

  private healthyChanged(): void {
    this.healthyCache = undefined;
    this.downCache = undefined;
    this.changedAt = this.now();
  }

  private good(rec: EdgeRecord, why: string): void {
    if (rec.up) return;
    // Never back while silent or self-reported unhealthy, however well probes go.
    if (!rec.hb.healthy || this.now() - rec.lastBeatAt > this.staleAfterMs) return;
    rec.goodStreak++;
    if (rec.goodStreak >= this.rise) this.setState(rec, true, `${why} (${rec.goodStreak} good in a row)`);
  }

  private setState(rec: EdgeRecord, up: boolean, reason: string): void {
    const changed = rec.up !== up;
    rec.up = up;
    rec.reason = up ? 'ok' : reason;
    if (!changed) return;
    rec.since = this.now();
    rec.goodStreak = 0;
    rec.badProbes = 0;
    this.healthyChanged();
    this.log?.info({ edge: rec.hb.id, url: rec.view.url, region: rec.view.region, state: up ? 'up' : 'down', reason }, up ? 'edge in' : 'edge out');
    this.onChange?.(rec.hb.id, up ? 'up' : 'down', reason);
  }

  private toStatus(r: EdgeRecord, now: number): EdgeStatus {
    return {
      id: r.hb.id,
      url: r.view.url,
      region: r.view.region,
      state: r.up ? 'up' : 'down',
      healthy: r.up,
      reason: r.reason,
      since: r.since,
      lastHeartbeatAgoMs: now - r.lastBeatAt,
      load: r.view.load,
      steeredSinceHeartbeat: r.steered,
      capacityBytes: r.hb.capacityBytes,
      ...(r.hb.diskCapacityBytes === undefined ? {} : { diskCapacityBytes: r.hb.diskCapacityBytes }),
      usedBytes: r.hb.usedBytes,
      inFlight: r.hb.inFlight,
      rps: r.hb.rps,
      egressBps: r.hb.egressBps,
      titles: r.view.titles.size,
      demoted: r.view.demoted === true,
      ...(r.hb.parent ? { parent: r.hb.parent } : {}),
      ...(r.lastProbe ? { lastProbe: { agoMs: now - r.lastProbe.at, ok: r.lastProbe.ok, ...(r.lastProbe.error ? { error: r.lastProbe.error } : {}) } } : {}),
    };
  }

  private async httpProbe(url: string, timeoutMs: number): Promise<true | string> {
    this.agent ??= new Agent({ keepAliveTimeout: Math.max(1_000, this.probeIntervalMs * 2), connections: 2 });
    try {
      const res = await request(`${url}/healthz`, {
        dispatcher: this.agent,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.body.dump();
      return res.statusCode === 200 ? true : `HTTP ${res.statusCode}`;
    } catch (err) {
      const e = err as Error & { code?: string };
      return e.code ?? e.name ?? 'error';
    }
  }
}
