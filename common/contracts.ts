/**
 * Wire contracts between parts (DESIGN.md §2), in one place so edge, steering, aggregator,
 * player-sim, the CLI and the tests agree by construction. Each body is ONE TypeBox schema: its
 * TypeScript type is `Static<typeof XSchema>` and its JSON Schema is the value itself, which a
 * receiver compiles once (common/http.ts bodyValidator) and checks every body it accepts against.
 *
 * A schema's `description` is the reason a receiver gives when that field is wrong ("id: must
 * be …"), so it reads as a requirement.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { ErrorCodes } from './errors.ts';
import type { QoeEvent } from '../telemetry/events.ts';

// ---- building blocks ---------------------------------------------------------------------

/** Edge ids, regions, sites: what appears in metric labels and Cache-Status. */
export const LABEL_PATTERN = '^[A-Za-z0-9._-]{1,64}$';
const Label = (what = 'must be 1-64 characters of A-Z a-z 0-9 . _ -') => Type.String({ pattern: LABEL_PATTERN, description: what });
/**
 * An absolute http(s) base URL: a host name or [IPv6] literal, an optional port and path, no
 * user info, query or fragment (receivers append paths to it).
 */
export const HTTP_URL_PATTERN = '^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9._~-]{1,253}|\\[[0-9A-Fa-f:.]{2,45}\\])(?::[0-9]{1,5})?(?:/[^\\s?#]*)?$';
const HttpUrl = (what = 'must be an absolute http(s) URL') => Type.String({ maxLength: 2048, pattern: HTTP_URL_PATTERN, description: what });
const Count = Type.Number({ minimum: 0, description: 'must be a finite number ≥ 0' });
const Flag = Type.Boolean({ description: 'must be true or false' });
const NumberOrNull = Type.Union([Type.Number(), Type.Null()]);
export const TITLE_ID_PATTERN = '^[A-Za-z0-9._-]{1,128}$';

// ---- errors: every 4xx/5xx of every service -----------------------------------------------

export const ErrorBodySchema = Type.Object({
  error: Type.Object({
    /** Stable: match on this (common/errors.ts). */
    code: Type.Enum(ErrorCodes),
    /** One line for people; may change. */
    message: Type.String({ maxLength: 1_000 }),
    /** Extra facts (never secrets), e.g. the list of problems of an invalid body. */
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  }),
});
export type ErrorBody = Static<typeof ErrorBodySchema>;

// ---- POST /v1/edges/heartbeat (edge → steering, once a second) ------------------------------

/**
 * Bounds the receiver keeps. An edge lists at most `maxTitles` titles (title ids, the catalog's
 * pattern) and a beat is at most `maxBodyBytes`: 4096 ids of ≤ 128 characters would not fit, so
 * the byte bound is the one that holds, and an edge with more titles sends a subset (the rest
 * only loses its inventory tie-break). Steering keeps no list: it folds the titles into a
 * fixed-size Bloom filter per edge (steering/inventory.ts), so a record costs the same whatever
 * a beat carried.
 */
export const HEARTBEAT_LIMITS = { maxTitles: 4_096, maxTitleLength: 128, maxBodyBytes: 256 << 10 } as const;

export const EdgeHeartbeatSchema = Type.Object(
  {
    id: Label('must be 1-64 characters of A-Z a-z 0-9 . _ -'),
    /** Base URL players use, e.g. http://127.0.0.1:8401 (no trailing slash). */
    url: HttpUrl(),
    region: Label('must be 1-64 characters of A-Z a-z 0-9 . _ -'),
    capacityBytes: Count,
    usedBytes: Count,
    /** The disk tier's bound and use, when the edge has one (its titles are in `titles` too). */
    diskCapacityBytes: Type.Optional(Count),
    diskUsedBytes: Type.Optional(Count),
    inFlight: Count,
    /** Requests per second over the last interval. */
    rps: Count,
    /** Egress bits per second over the last interval. */
    egressBps: Count,
    healthy: Flag,
    /** Titles with at least one object in cache (compact inventory). */
    titles: Type.Array(
      Type.String({
        pattern: TITLE_ID_PATTERN,
        description: `every entry must be a title id of 1-${HEARTBEAT_LIMITS.maxTitleLength} characters of A-Z a-z 0-9 . _ -`,
      }),
      { maxItems: HEARTBEAT_LIMITS.maxTitles, description: 'must be an array of title ids' },
    ),
    /** Edge's own clock, ms since epoch. */
    ts: Count,
    /** Optional: parent/shield URL, when this edge is a child tier. */
    parent: Type.Optional(HttpUrl('must be an absolute http(s) URL when present')),
  },
  { description: 'must be a JSON object' },
);
export type EdgeHeartbeat = Static<typeof EdgeHeartbeatSchema>;

export const EdgeStateSchema = Type.Union([Type.Literal('up'), Type.Literal('down')]);
export type EdgeState = Static<typeof EdgeStateSchema>;

/** Steering's answer to a heartbeat it accepted. */
export const HeartbeatAckSchema = Type.Object({ ok: Type.Literal(true), id: Type.String(), state: EdgeStateSchema });
export type HeartbeatAck = Static<typeof HeartbeatAckSchema>;

// ---- GET /v1/steer?title=&region=&isp=&session=&policy= -------------------------------------

/** One ranked edge in a steering answer; `url` is the signed master playlist URL on that edge. */
export const SteeredEdgeSchema = Type.Object({
  id: Type.String(),
  url: Type.String(),
  region: Type.String(),
  /** Why the policy put this edge here, e.g. "site+hash", "backup-site+overload-skip". */
  reason: Type.String(),
  score: Type.Number(),
});
export type SteeredEdge = Static<typeof SteeredEdgeSchema>;

export const SteerResponseSchema = Type.Object({
  sessionId: Type.String(),
  title: Type.String(),
  policy: Type.String(),
  /** The client's site (from ?region= or its source address through the coverage zones). */
  site: Type.String(),
  /** Token expiry, ms since epoch. */
  expiresAt: Type.Number(),
  edges: Type.Array(SteeredEdgeSchema),
});
export type SteerResponse = Static<typeof SteerResponseSchema>;

// ---- GET /v1/edges ---------------------------------------------------------------------------

/** One row of GET /v1/edges. */
export const EdgeStatusSchema = Type.Object({
  id: Type.String(),
  url: Type.String(),
  region: Type.String(),
  state: EdgeStateSchema,
  healthy: Type.Boolean(),
  /** Why the edge is down (or "ok"). */
  reason: Type.String(),
  /** ms since epoch of the last state change. */
  since: Type.Number(),
  lastHeartbeatAgoMs: Type.Number(),
  load: Type.Number(),
  steeredSinceHeartbeat: Type.Number(),
  capacityBytes: Type.Number(),
  /** Its disk tier's capacity, when it has one (heartbeat diskCapacityBytes). */
  diskCapacityBytes: Type.Optional(Type.Number()),
  usedBytes: Type.Number(),
  inFlight: Type.Number(),
  rps: Type.Number(),
  egressBps: Type.Number(),
  titles: Type.Number(),
  demoted: Type.Boolean(),
  parent: Type.Optional(Type.String()),
  /** Asked with `?holds=a,b`: those of the titles the edge's inventory (a Bloom filter: rare false positives) holds. */
  holds: Type.Optional(Type.Array(Type.String())),
  lastProbe: Type.Optional(Type.Object({ agoMs: Type.Number(), ok: Type.Boolean(), error: Type.Optional(Type.String()) })),
});
export type EdgeStatus = Static<typeof EdgeStatusSchema>;

export const EdgeListSchema = Type.Object({ edges: Type.Array(EdgeStatusSchema) });
/** Titles one `GET /v1/edges?holds=a,b` may ask about (the query stays inside the header bound). */
export const MAX_HOLDS_QUERY = 256;
export type EdgeList = Static<typeof EdgeListSchema>;

// ---- GET /v1/catalog (steering) = catalog.json at the bucket root ---------------------------

export const CatalogRenditionSchema = Type.Object({
  /** e.g. "730k" */
  name: Type.String(),
  /** bits/s (peak, as in BANDWIDTH) */
  bandwidth: Type.Number(),
  /** bits/s */
  averageBandwidth: Type.Number(),
  width: Type.Number(),
  height: Type.Number(),
  codecs: Type.String(),
  /**
   * Imported titles: the media playlist's path inside the title folder ("stream_0/index.m3u8");
   * absent for seeded titles, whose playlists are always `{name}/index.m3u8`.
   */
  uri: Type.Optional(Type.String({ maxLength: 512 })),
});
export type CatalogRendition = Static<typeof CatalogRenditionSchema>;

/** Where an imported title's objects and their hashes are listed (`vod/{title}/hashes.json`). */
export const CatalogManifestRefSchema = Type.Object({
  key: Type.String({ maxLength: 512 }),
  /** SHA-256 hex of the manifest object's bytes: the catalog pins the manifest, the manifest pins every object. */
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  objects: Type.Integer({ minimum: 0 }),
  bytes: Type.Integer({ minimum: 0 }),
});
export type CatalogManifestRef = Static<typeof CatalogManifestRefSchema>;

export const CatalogTitleSchema = Type.Object({
  /** e.g. "title-0001" */
  id: Type.String({ pattern: TITLE_ID_PATTERN }),
  durationSec: Type.Number(),
  segmentSec: Type.Number(),
  segments: Type.Integer({ minimum: 0 }),
  /** 1 = most popular; a Zipf draw over ranks picks what players watch. */
  popularityRank: Type.Integer({ minimum: 1 }),
  renditions: Type.Array(CatalogRenditionSchema),
  /** synthetic/ffmpeg: made by `ocdn content seed` (keys as in contentKeys); import: packaged elsewhere, registered by `ocdn content import`. */
  mode: Type.Union([Type.Literal('synthetic'), Type.Literal('ffmpeg'), Type.Literal('import')]),
  /** fmp4 titles have an init section (EXT-X-MAP) + fragments; ts titles MPEG-TS segments. */
  container: Type.Union([Type.Literal('ts'), Type.Literal('fmp4')]),
  /** segments (default when absent): one object per segment; byterange: EXT-X-BYTERANGE slices of one file per rendition. */
  layout: Type.Optional(Type.Union([Type.Literal('segments'), Type.Literal('byterange')])),
  /** Imported titles: the hash manifest of every object of the title. */
  manifest: Type.Optional(CatalogManifestRefSchema),
  /** Imported titles: when, ISO 8601. */
  importedAt: Type.Optional(Type.String({ maxLength: 64 })),
});
export type CatalogTitle = Static<typeof CatalogTitleSchema>;

/** `vod/{title}/hashes.json`: every object of an imported title, keys relative to the title folder, sorted. */
export const HashManifestSchema = Type.Object({
  version: Type.Literal(1),
  title: Type.String({ pattern: TITLE_ID_PATTERN }),
  objects: Type.Array(
    Type.Object({ path: Type.String({ maxLength: 512 }), size: Type.Integer({ minimum: 0 }), sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }) }),
  ),
});
export type HashManifest = Static<typeof HashManifestSchema>;

export const CatalogSchema = Type.Object({
  version: Type.Literal(1),
  generatedAt: Type.String(),
  ladder: Type.String(),
  titles: Type.Array(CatalogTitleSchema),
});
export type Catalog = Static<typeof CatalogSchema>;

export const CATALOG_KEY = 'catalog.json';

export const contentKeys = {
  master: (title: string) => `vod/${title}/master.m3u8`,
  media: (title: string, rendition: string) => `vod/${title}/${rendition}/index.m3u8`,
  segment: (title: string, rendition: string, index: number, ext: 'ts' | 'm4s' = 'ts') =>
    `vod/${title}/${rendition}/seg-${String(index).padStart(5, '0')}.${ext}`,
  init: (title: string, rendition: string) => `vod/${title}/${rendition}/init.mp4`,
  /** Imported titles: the hash manifest (HashManifest). */
  hashes: (title: string) => `vod/${title}/hashes.json`,
};

// ---- GET /v1/qoe?by=&window=&last=&from=&to=&value=&final= (aggregator) ----------------------

export const QoeDimensionSchema = Type.Union([
  Type.Literal('all'),
  Type.Literal('edge'),
  Type.Literal('title'),
  Type.Literal('region'),
  Type.Literal('isp'),
  Type.Literal('device'),
  Type.Literal('abr'),
]);

/** What the API and CLI show for a (merged) aggregate: raw sums plus the derived QoE metrics. */
export const QoeMetricsSchema = Type.Object({
  events: Type.Number(),
  /** Sessions started in the window. */
  sessions: Type.Number(),
  sessionEnds: Type.Number(),
  vstP50Ms: NumberOrNull,
  vstP95Ms: NumberOrNull,
  vstP99Ms: NumberOrNull,
  vstMeanMs: NumberOrNull,
  startups: Type.Number(),
  startFailures: Type.Number(),
  /** Start failures / session ends. */
  startFailureRate: NumberOrNull,
  exitsBeforeStart: Type.Number(),
  ebvsRate: NumberOrNull,
  playS: Type.Number(),
  stallS: Type.Number(),
  /** Σstall / Σ(play + stall), from session ends. */
  rebufferRatio: NumberOrNull,
  stalls: Type.Number(),
  /** stall_start events per played minute. */
  stallsPerMin: NumberOrNull,
  /** Time-weighted, bits/s. */
  avgBitrate: NumberOrNull,
  switches: Type.Number(),
  /** Σ session_end.switches per played minute. */
  switchesPerMin: NumberOrNull,
  errors: Type.Number(),
  fatalErrors: Type.Number(),
  /** Sessions ended by an error / session ends. */
  errorRate: NumberOrNull,
  failovers: Type.Number(),
  segments: Type.Number(),
  cacheHitRatio: NumberOrNull,
  segmentBytes: Type.Number(),
  /** Σ session_end.bytes */
  sessionBytes: Type.Number(),
  ttfbMeanMs: NumberOrNull,
  duplicates: Type.Number(),
  late: Type.Number(),
  /** Miss classification (issue 15): bytes edges served, by why they were or were not a local hit. */
  localHitBytes: Type.Number(),
  contentMissBytes: Type.Number(),
  healthMissBytes: Type.Number(),
  otherMissBytes: Type.Number(),
  /** Edge access records with no steering decision for their session: not classified, counted here. */
  unmatchedAccesses: Type.Number(),
  unmatchedAccessBytes: Type.Number(),
  /** Edge access records that came after the join had moved past them: counted, not classified. */
  lateAccesses: Type.Number(),
});
export type QoeMetrics = Static<typeof QoeMetricsSchema>;

export const QoeRowSchema = Type.Composite([Type.Object({ value: Type.String() }), QoeMetricsSchema]);
export type QoeRow = Static<typeof QoeRowSchema>;

export const QoeWindowSchema = Type.Object({ start: Type.Number(), end: Type.Number(), final: Type.Boolean(), rows: Type.Array(QoeRowSchema) });
export type QoeWindow = Static<typeof QoeWindowSchema>;

/** What the read side computes for a query (telemetry/view.ts). */
export const QoeResultSchema = Type.Object({
  by: QoeDimensionSchema,
  windowMs: Type.Number(),
  from: NumberOrNull,
  to: NumberOrNull,
  generatedAt: Type.Number(),
  /** Partitions that contributed records in the range. */
  partitions: Type.Array(Type.Number()),
  windows: Type.Array(QoeWindowSchema),
  /** Each value merged over the whole range. */
  totals: Type.Array(QoeRowSchema),
});
export type QoeResult = Static<typeof QoeResultSchema>;

/** The GET /v1/qoe body: the result plus the aggregator's window settings. */
export const QoeResponseSchema = Type.Composite([QoeResultSchema, Type.Object({ baseWindowMs: Type.Number(), graceMs: Type.Number() })]);
export type QoeResponse = Static<typeof QoeResponseSchema>;

// ---- GET /v1/qoe/stream?by=&last=&… (aggregator, Server-Sent Events) ------------------------

/**
 * The live form of GET /v1/qoe, for the web console: `text/event-stream` answering the same
 * query parameters (a bad query is the same 400 error body, before any event). On connect and
 * then every `intervalMs`: `event: qoe` + `data: <QoeResponse JSON>` (QoeStreamEventSchema),
 * each a whole snapshot, so a reader that falls behind misses some rather than queueing them.
 * A `: keep-alive` comment line every `heartbeatMs`; `event: error` + `data: <ErrorBody>` if a
 * snapshot could not be computed (the stream goes on). Past `maxStreams` open streams: 503
 * E_BUSY. The server ends every stream when it stops; EventSource reconnects after `retry`.
 */
export const QOE_STREAM = { event: 'qoe', intervalMs: 1_000, heartbeatMs: 15_000, maxStreams: 64 } as const;
/** The `data` of every `qoe` event. */
export const QoeStreamEventSchema = QoeResponseSchema;
export type QoeStreamEvent = QoeResponse;

// ---- POST /v1/events (browser players → ingest → Kafka) ------------------------------------

/**
 * navigator.sendBeacon caps a body at 64 KiB and sends strings as text/plain (no CORS
 * preflight), so the ingest takes a JSON body of that size whatever its content type.
 */
export const EVENT_BATCH_LIMITS = { maxEvents: 200, maxBodyBytes: 64 * 1024 } as const;

/**
 * Each event is checked one by one against its type's schema (telemetry/validate.ts) so a bad
 * event goes to the DLQ with its reason while the good ones of the batch still count; the
 * batch schema bounds the count and requires objects.
 */
const QoeEventItem = Type.Unsafe<QoeEvent>(Type.Object({}, { description: 'every event must be a JSON object (a QoE event, telemetry/events.ts)' }));

export const EventBatchSchema = Type.Object(
  {
    events: Type.Array(QoeEventItem, {
      minItems: 1,
      maxItems: EVENT_BATCH_LIMITS.maxEvents,
      description: `must be an array of 1-${EVENT_BATCH_LIMITS.maxEvents} QoE events`,
    }),
  },
  { description: 'must be a JSON object {"events": [...]}' },
);
export type EventBatch = Static<typeof EventBatchSchema>;

/**
 * The ingest's answer (202): `accepted` events are in Kafka or in the ingest's spill file (never
 * lost), `invalid` ones (schema or event time, judged as the aggregator judges events) went to
 * the DLQ with their reason; accepted + invalid = the batch's length. Other answers: 400 (not
 * JSON, not a batch), 413 (over maxBodyBytes), 415 (neither application/json, text/plain nor
 * no content type; or a content encoding), 429 with Retry-After (rate per client address or
 * in all), 503 (neither Kafka nor the spill file took the events: send the batch again, events
 * are deduplicated by id).
 */
export const EventBatchAckSchema = Type.Object({ accepted: Type.Integer({ minimum: 0 }), invalid: Type.Integer({ minimum: 0 }) });
export type EventBatchAck = Static<typeof EventBatchAckSchema>;

// ---- edge admin: POST /admin/fill, GET /admin/fill[/<id>], POST /admin/purge ----------------

export const ADMIN_LIMITS = { maxFillKeys: 100_000, maxKeyLength: 1_024, fillBodyBytes: 4 << 20, purgeBodyBytes: 64 * 1024 } as const;

export const FillSourceSchema = Type.Union(
  [
    Type.Object({ kind: Type.Literal('upstream') }),
    Type.Object({ kind: Type.Literal('peer'), url: Type.String({ pattern: '^https?://[^\\s]+$', maxLength: 512 }) }),
  ],
  { description: 'must be {"kind": "upstream"} or {"kind": "peer", "url": "http://..."}' },
);
export type FillSource = Static<typeof FillSourceSchema>;

export const FillRequestSchema = Type.Object(
  {
    /** Object keys, e.g. "/vod/title-0001/730k/seg-00000.ts" (leading slash optional). */
    keys: Type.Optional(
      Type.Array(Type.String({ maxLength: ADMIN_LIMITS.maxKeyLength, description: 'every key must be a string (a /vod/... path)' }), {
        maxItems: ADMIN_LIMITS.maxFillKeys,
        description: 'must be an array of strings',
      }),
    ),
    /** A whole title, followed through its playlists. */
    title: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$', description: 'must be a title id like "title-0001"' })),
    /** Bytes per second pulled from upstream: a number or a size like "50MB". */
    bytesPerSecond: Type.Optional(
      Type.Union([Type.Number({ exclusiveMinimum: 0 }), Type.String({ maxLength: 32 })], {
        description: 'must be a positive number or a size like "50MB"',
      }),
    ),
    /** Answer when the fill is done (200) instead of when it started (202). */
    wait: Type.Optional(Flag),
    /**
     * Where the objects come from: the edge's own upstream (shield or S3, the default), or a peer
     * edge of the same site that holds them (its `GET /admin/source/...`, with this edge's admin
     * token); what the peer no longer holds comes from the own upstream.
     */
    source: Type.Optional(FillSourceSchema),
  },
  { description: 'must be a JSON object {"keys": [...]} or {"title": "..."}' },
);
export type FillRequest = Static<typeof FillRequestSchema>;

const FillState = Type.Union([Type.Literal('running'), Type.Literal('done'), Type.Literal('failed'), Type.Literal('cancelled')]);

export const FillJobSchema = Type.Object({
  id: Type.String(),
  title: Type.Optional(Type.String()),
  state: FillState,
  bytesPerSecond: Type.Number(),
  /** "upstream", or "peer <url>". */
  source: Type.Optional(Type.String()),
  /** Peer fills: keys the peer did not hold, taken from the edge's own upstream instead. */
  fromUpstream: Type.Optional(Type.Number()),
  /** Keys to fill; grows while a title's playlists are read. */
  keys: Type.Number(),
  done: Type.Number(),
  /** Keys that were already fresh in the cache. */
  alreadyCached: Type.Number(),
  bytesFetched: Type.Number(),
  failed: Type.Array(Type.Object({ key: Type.String(), reason: Type.String() })),
  error: Type.Optional(Type.String()),
  startedAt: Type.String(),
  finishedAt: Type.Optional(Type.String()),
});
export type FillJob = Static<typeof FillJobSchema>;

/** A job in lists and in the 202 answer: the failures counted, not listed. */
export const FillJobSummarySchema = Type.Composite([Type.Omit(FillJobSchema, ['failed']), Type.Object({ failed: Type.Number() })]);
export type FillJobSummary = Static<typeof FillJobSummarySchema>;

export const FillJobListSchema = Type.Object({ jobs: Type.Array(FillJobSummarySchema) });
export type FillJobList = Static<typeof FillJobListSchema>;

export const PurgeRequestSchema = Type.Object(
  {
    /** Under /vod/ (leading slash optional); no "." or ".." segments. */
    prefix: Type.String({
      maxLength: ADMIN_LIMITS.maxKeyLength,
      pattern: '^(?!(?:.*/)?\\.\\.?(?:/|$))/?vod/[A-Za-z0-9._/-]*$',
      description: 'must be under /vod/ and use only A-Z a-z 0-9 . _ - / (e.g. "/vod/title-0001/")',
    }),
    /** Soft: mark stale (revalidate, keep for stale-if-error) instead of dropping. */
    soft: Type.Optional(Flag),
  },
  { description: 'must be a JSON object {"prefix": "/vod/...", "soft": false}' },
);
export type PurgeRequest = Static<typeof PurgeRequestSchema>;

export const PurgeResponseSchema = Type.Object({ prefix: Type.String(), soft: Type.Boolean(), purged: Type.Integer({ minimum: 0 }) });
export type PurgeResponse = Static<typeof PurgeResponseSchema>;

// ---- web console (console/server.ts): what its page reads and sends --------------------------

/** POST /api/login-tokens (admin bearer): a one-time login token; `url` = the console's `/?login=<token>`. */
export const ConsoleLoginTokenSchema = Type.Object({ token: Type.String(), url: Type.String(), expiresAt: Type.Number() });
export type ConsoleLoginToken = Static<typeof ConsoleLoginTokenSchema>;

/** GET /api/session (session cookie): the CSRF token for chaos calls and where the player finds steering. */
export const ConsoleSessionSchema = Type.Object({
  csrfToken: Type.String(),
  steeringUrl: Type.String(),
  expiresAt: Type.Number(),
});
export type ConsoleSession = Static<typeof ConsoleSessionSchema>;

/** One edge in the console's cluster view: steering's row plus what the edge's own /metrics say. */
export const ConsoleEdgeSchema = Type.Composite([
  EdgeStatusSchema,
  Type.Object({
    /** HIT / (HIT + MISS + STALE + COALESCED) requests since the edge started; null before any. */
    hitRatio: NumberOrNull,
    requests: Type.Number(),
    bytesServed: Type.Number(),
    originBytes: Type.Number(),
    /** Why /metrics could not be read (absent when it was). */
    metricsError: Type.Optional(Type.String()),
  }),
]);
export type ConsoleEdge = Static<typeof ConsoleEdgeSchema>;

/** `event: cluster` of GET /api/cluster/stream (and GET /api/cluster). */
export const ConsoleClusterSchema = Type.Object({
  generatedAt: Type.Number(),
  steeringUrl: Type.String(),
  /** Why steering's GET /v1/edges failed (absent when it answered). */
  steeringError: Type.Optional(Type.String()),
  edges: Type.Array(ConsoleEdgeSchema),
});
export type ConsoleCluster = Static<typeof ConsoleClusterSchema>;

/** POST /api/chaos/{kill-edge,restore} body. */
export const ConsoleChaosTargetSchema = Type.Object(
  { id: Type.String({ pattern: LABEL_PATTERN, description: 'must be a component name such as edge-1' }) },
  { additionalProperties: false, description: 'must be a JSON object {"id": "edge-1"}' },
);
export type ConsoleChaosTarget = Static<typeof ConsoleChaosTargetSchema>;

/** POST /api/chaos/origin-outage body: on = take the origin down until off. */
export const ConsoleOriginOutageSchema = Type.Object(
  { on: Type.Boolean({ description: 'must be true (origin down) or false (origin back)' }) },
  { additionalProperties: false, description: 'must be a JSON object {"on": true|false}' },
);
export type ConsoleOriginOutage = Static<typeof ConsoleOriginOutageSchema>;

/** The answer of every chaos call: what `ocdn chaos` would have printed. */
export const ConsoleChaosResultSchema = Type.Object({ ok: Type.Literal(true), action: Type.String(), target: Type.String(), log: Type.Array(Type.String()) });
export type ConsoleChaosResult = Static<typeof ConsoleChaosResultSchema>;

/** Every contract, by the API that carries it (docs, other-language clients, the contract tests). */
export const CONTRACTS = {
  'POST /v1/edges/heartbeat': { request: EdgeHeartbeatSchema, response: HeartbeatAckSchema },
  'GET /v1/steer': { response: SteerResponseSchema },
  'GET /v1/edges': { response: EdgeListSchema },
  'GET /v1/catalog': { response: CatalogSchema },
  'GET /v1/qoe': { response: QoeResponseSchema },
  'GET /v1/qoe/stream': { response: QoeStreamEventSchema },
  'POST /v1/events': { request: EventBatchSchema, response: EventBatchAckSchema },
  'POST /admin/fill': { request: FillRequestSchema, response: Type.Union([FillJobSummarySchema, FillJobSchema]) },
  'GET /admin/fill': { response: FillJobListSchema },
  'GET /admin/fill/{id}': { response: FillJobSchema },
  'POST /admin/purge': { request: PurgeRequestSchema, response: PurgeResponseSchema },
  'POST /api/login-tokens (console)': { response: ConsoleLoginTokenSchema },
  'GET /api/session (console)': { response: ConsoleSessionSchema },
  'GET /api/cluster/stream (console)': { response: ConsoleClusterSchema },
  'POST /api/chaos/kill-edge (console)': { request: ConsoleChaosTargetSchema, response: ConsoleChaosResultSchema },
  'POST /api/chaos/restore (console)': { request: ConsoleChaosTargetSchema, response: ConsoleChaosResultSchema },
  'POST /api/chaos/origin-outage (console)': { request: ConsoleOriginOutageSchema, response: ConsoleChaosResultSchema },
  '* (any 4xx/5xx)': { response: ErrorBodySchema },
} satisfies Record<string, { request?: TSchema; response: TSchema }>;

// ---- cache-miss classification (issue 15): steering decisions and edge access records -----
// Carried on Kafka (ocdn.steering.decisions.v1, ocdn.edge.access.v1) once producers emit them;
// the aggregator's join (telemetry/miss-join.ts) classifies each access against its decision.

/** Why steering did not put an edge first. */
export const SKIP_REASONS = ['unhealthy', 'overloaded', 'qoe-demoted', 'not-in-site'] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];
const SessionId = Type.String({ minLength: 1, maxLength: 128, description: 'must be a session id of 1-128 characters' });

export const SteeringDecisionSchema = Type.Object({
  sessionId: SessionId,
  title: Type.String({ pattern: TITLE_ID_PATTERN, description: 'must be a title id' }),
  /** The client's site (topology). */
  site: Label(),
  /** Decision time, ms since epoch. */
  ts: Count,
  /** Edges in the order steering gave them, each with its site. */
  ranked: Type.Array(Type.Object({ edge: Label(), site: Label() }), { maxItems: 64 }),
  /** Edges steering passed over at decision time, and why. */
  skipped: Type.Array(Type.Object({ edge: Label(), site: Label(), why: Type.Union(SKIP_REASONS.map((r) => Type.Literal(r))) }), { maxItems: 256 }),
});
export type SteeringDecision = Static<typeof SteeringDecisionSchema>;

export const ACCESS_TIERS = ['ram', 'disk', 'shield', 'origin'] as const;
export type AccessTier = (typeof ACCESS_TIERS)[number];

/** An access record as the join works on it: one response, expanded from a pack (below). */
export const EdgeAccessSchema = Type.Object({
  sessionId: SessionId,
  edge: Label(),
  title: Type.String({ pattern: TITLE_ID_PATTERN, description: 'must be a title id' }),
  object: Type.String({ maxLength: 1_024 }),
  bytes: Count,
  /** Where the bytes came from: this edge's RAM or disk, or its upstream. */
  tier: Type.Union(ACCESS_TIERS.map((t) => Type.Literal(t))),
  /** When the response ended, ms since epoch. */
  ts: Count,
});
export type EdgeAccess = Static<typeof EdgeAccessSchema>;

/**
 * One response as the edge writes it, once per request on the hit path, so without field names:
 * [sessionId, object, bytes, tier, ts]. No title (the aggregator reads it from the object path,
 * /vod/<title>/…) and no edge (the pack has it).
 */
export const EdgeAccessTupleSchema = Type.Tuple([
  SessionId,
  Type.String({ minLength: 1, maxLength: 1_024, description: 'must be an object path of 1-1024 characters' }),
  Count,
  Type.Union(ACCESS_TIERS.map((t) => Type.Literal(t))),
  Count,
]);
export type EdgeAccessTuple = Static<typeof EdgeAccessTupleSchema>;

/** Most records in one pack (the edge also keeps a pack's JSON under ACCESS_PACK_BYTES). */
export const ACCESS_PACK_MAX_RECORDS = 1_000;
export const ACCESS_PACK_BYTES = 48 * 1024;

/**
 * What one line of `ocdn.edge.access.v1` carries (a message holds one or more lines): one edge's
 * records of sessions whose ids fall in the message's partition, so each session's accesses stay
 * in the partition of its steering decisions.
 */
export const EdgeAccessPackSchema = Type.Object({
  edge: Label(),
  records: Type.Array(EdgeAccessTupleSchema, { minItems: 1, maxItems: ACCESS_PACK_MAX_RECORDS }),
});
export type EdgeAccessPack = Static<typeof EdgeAccessPackSchema>;

const ACCESS_TITLE = new RegExp(TITLE_ID_PATTERN);

/** The title an access tuple's object belongs to (`/vod/<title>/…`), or undefined: the contract's one reading of it. */
export function titleOfAccessObject(object: string): string | undefined {
  if (!object.startsWith('/vod/')) return undefined;
  const end = object.indexOf('/', 5);
  const title = object.slice(5, end === -1 ? undefined : end);
  return ACCESS_TITLE.test(title) ? title : undefined;
}
