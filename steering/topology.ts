import { readFile } from 'node:fs/promises';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

/**
 * Sites (one per region), the order in which a client falls back from its own site to others,
 * and the coverage-zone map that puts a client's source address in a site (as Apache Traffic
 * Router does with its coverage zone file).
 *
 * File format (`--topology cluster.json`):
 * ```json
 * {
 *   "sites": [
 *     { "id": "us-east", "lat": 39.0, "lon": -77.5, "backups": ["us-west"] },
 *     { "id": "us-west", "lat": 45.6, "lon": -121.2 }
 *   ],
 *   "coverageZones": [ { "cidr": "127.1.0.0/16", "site": "us-east" } ],
 *   "defaultSite": "us-east"
 * }
 * ```
 * A site's fallback order is its explicit `backups` first, then every other site by
 * great-circle distance (declaration order when coordinates are missing). Edges join a site
 * through the `region` of their heartbeat; edges whose region is no site still serve, last.
 */

export interface SiteSpec {
  id: string;
  lat?: number;
  lon?: number;
  /** Preferred fallback sites, nearest first. */
  backups?: string[];
}

export interface CoverageZoneSpec {
  cidr: string;
  site: string;
}

export interface TopologySpec {
  sites: SiteSpec[];
  coverageZones?: CoverageZoneSpec[];
  /** Site of clients no zone covers (and of non-IPv4 clients). Default: the first site. */
  defaultSite?: string;
}

/**
 * The built-in topology: three regions at the usual cloud locations (Ashburn, Oregon, Dublin),
 * so fallback is us-east ↔ us-west first and Europe last from the US. Loopback sub-ranges map
 * to sites so a test or demo picks its site by its source address: 127.1.x.x is us-east,
 * 127.2.x.x us-west, 127.3.x.x eu-west, any other 127.x (plain 127.0.0.1) us-east.
 */
export const DEFAULT_TOPOLOGY: TopologySpec = {
  sites: [
    { id: 'us-east', lat: 39.04, lon: -77.49 },
    { id: 'us-west', lat: 45.6, lon: -121.18 },
    { id: 'eu-west', lat: 53.35, lon: -6.26 },
  ],
  coverageZones: [
    { cidr: '127.1.0.0/16', site: 'us-east' },
    { cidr: '127.2.0.0/16', site: 'us-west' },
    { cidr: '127.3.0.0/16', site: 'eu-west' },
    { cidr: '127.0.0.0/8', site: 'us-east' },
  ],
  defaultSite: 'us-east',
};

const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

interface Zone {
  network: number;
  mask: number;
  bits: number;
  site: string;
  cidr: string;
}

export class Topology {
  readonly siteIds: readonly string[];
  readonly defaultSite: string;
  private readonly known: ReadonlySet<string>;
  private readonly orders = new Map<string, readonly string[]>();
  /** Longest prefix first, so the first match is the most specific zone. */
  private readonly zones: readonly Zone[];

  constructor(spec: TopologySpec) {
    const problems = validateTopology(spec);
    if (problems.length > 0) throw new OcdnError(ErrorCodes.CONFIG, `invalid topology:\n  - ${problems.join('\n  - ')}`, { details: { problems } });
    this.siteIds = spec.sites.map((s) => s.id);
    this.known = new Set(this.siteIds);
    this.defaultSite = spec.defaultSite ?? this.siteIds[0]!;
    for (const site of spec.sites) this.orders.set(site.id, [site.id, ...fallbackOrder(site, spec.sites)]);
    this.zones = (spec.coverageZones ?? []).map((z) => ({ ...parseCidr(z.cidr)!, site: z.site, cidr: z.cidr })).sort((a, b) => b.bits - a.bits);
  }

  isSite(id: string): boolean {
    return this.known.has(id);
  }

  /**
   * The client's site first, then its fallback sites. A site the topology does not know (a
   * region only some edges report, such as "local") comes first, then every known site in
   * declaration order.
   */
  siteOrder(site: string): readonly string[] {
    const order = this.orders.get(site);
    if (order) return order;
    const made = [site, ...this.siteIds];
    // Bounded: only regions seen in requests land here, and they pass the id pattern.
    if (this.orders.size < 10_000) this.orders.set(site, made);
    return made;
  }

  /** Coverage-zone lookup; undefined when no zone covers the address (or it is not IPv4). */
  zoneSite(ip: string | undefined): string | undefined {
    if (ip === undefined) return undefined;
    const n = parseIpv4(ip.startsWith('::ffff:') ? ip.slice(7) : ip);
    if (n === undefined) return undefined;
    for (const z of this.zones) if ((n & z.mask) >>> 0 === z.network) return z.site;
    return undefined;
  }

  /** `?region=` wins; else the coverage zone of the source address; else the default site. */
  clientSite(region: string | undefined, ip: string | undefined): string {
    if (region !== undefined && region !== '') return region;
    return this.zoneSite(ip) ?? this.defaultSite;
  }

  toJSON(): TopologySpec {
    return {
      sites: this.siteIds.map((id) => ({ id, backups: this.orders.get(id)!.slice(1) })),
      coverageZones: this.zones.map((z) => ({ cidr: z.cidr, site: z.site })),
      defaultSite: this.defaultSite,
    };
  }
}

function fallbackOrder(site: SiteSpec, all: readonly SiteSpec[]): string[] {
  const explicit = site.backups ?? [];
  const rest = all
    .map((s, index) => ({ s, index }))
    .filter(({ s }) => s.id !== site.id && !explicit.includes(s.id))
    .sort((a, b) => {
      const da = distanceKm(site, a.s);
      const db = distanceKm(site, b.s);
      if (da !== undefined && db !== undefined && da !== db) return da - db;
      if (da !== undefined && db === undefined) return -1;
      if (da === undefined && db !== undefined) return 1;
      return a.index - b.index;
    })
    .map(({ s }) => s.id);
  return [...explicit, ...rest];
}

/** Great-circle distance (haversine); undefined when either site has no coordinates. */
export function distanceKm(a: SiteSpec, b: SiteSpec): number | undefined {
  if (a.lat === undefined || a.lon === undefined || b.lat === undefined || b.lon === undefined) return undefined;
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.min(1, Math.sqrt(h)));
}

export function parseIpv4(ip: string): number | undefined {
  const parts = ip.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n >>> 0;
}

export function parseCidr(cidr: string): { network: number; mask: number; bits: number } | undefined {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr);
  if (!m) return undefined;
  const addr = parseIpv4(m[1]!);
  const bits = Number(m[2]);
  if (addr === undefined || bits > 32) return undefined;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { network: (addr & mask) >>> 0, mask, bits };
}

/** Every problem with a topology, each naming where it is (empty when valid). */
export function validateTopology(raw: unknown): string[] {
  const problems: string[] = [];
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return ['the topology must be a JSON object with "sites"'];
  const spec = raw as Record<string, unknown>;
  for (const key of Object.keys(spec))
    if (!['sites', 'coverageZones', 'defaultSite'].includes(key)) problems.push(`unknown field "${key}" (expected sites, coverageZones, defaultSite)`);
  if (!Array.isArray(spec.sites) || spec.sites.length === 0) {
    problems.push('"sites" must be a non-empty array');
    return problems;
  }
  const ids = new Set<string>();
  spec.sites.forEach((s: unknown, i) => {
    const where = `sites[${i}]`;
    if (typeof s !== 'object' || s === null) {
      problems.push(`${where}: must be an object with an "id"`);
      return;
    }
    const site = s as Record<string, unknown>;
    if (typeof site.id !== 'string' || !ID_PATTERN.test(site.id)) problems.push(`${where}.id: must be 1-64 characters of A-Z a-z 0-9 . _ -`);
    else if (ids.has(site.id)) problems.push(`${where}.id: duplicate site "${site.id}"`);
    else ids.add(site.id);
    if (site.lat !== undefined && (typeof site.lat !== 'number' || !(site.lat >= -90 && site.lat <= 90)))
      problems.push(`${where}.lat: must be a number in [-90, 90]`);
    if (site.lon !== undefined && (typeof site.lon !== 'number' || !(site.lon >= -180 && site.lon <= 180)))
      problems.push(`${where}.lon: must be a number in [-180, 180]`);
    if ((site.lat === undefined) !== (site.lon === undefined)) problems.push(`${where}: give both lat and lon, or neither`);
    for (const key of Object.keys(site)) if (!['id', 'lat', 'lon', 'backups'].includes(key)) problems.push(`${where}: unknown field "${key}"`);
  });
  spec.sites.forEach((s: unknown, i) => {
    const site = s as { id?: unknown; backups?: unknown } | null;
    if (site?.backups === undefined) return;
    if (!Array.isArray(site.backups)) {
      problems.push(`sites[${i}].backups: must be an array of site ids`);
      return;
    }
    const seen = new Set<unknown>();
    site.backups.forEach((b: unknown, j) => {
      if (typeof b !== 'string' || !ids.has(b)) problems.push(`sites[${i}].backups[${j}]: unknown site ${JSON.stringify(b)}`);
      else if (b === site.id) problems.push(`sites[${i}].backups[${j}]: a site cannot back itself up`);
      else if (seen.has(b)) problems.push(`sites[${i}].backups[${j}]: "${b}" listed twice`);
      seen.add(b);
    });
  });
  if (spec.coverageZones !== undefined) {
    if (!Array.isArray(spec.coverageZones)) problems.push('"coverageZones" must be an array of { cidr, site }');
    else
      spec.coverageZones.forEach((z: unknown, i) => {
        const zone = z as { cidr?: unknown; site?: unknown } | null;
        if (typeof zone?.cidr !== 'string' || parseCidr(zone.cidr) === undefined)
          problems.push(`coverageZones[${i}].cidr: ${JSON.stringify(zone?.cidr)} is not an IPv4 CIDR like 10.0.0.0/8`);
        if (typeof zone?.site !== 'string' || !ids.has(zone.site)) problems.push(`coverageZones[${i}].site: unknown site ${JSON.stringify(zone?.site)}`);
      });
  }
  if (spec.defaultSite !== undefined && (typeof spec.defaultSite !== 'string' || !ids.has(spec.defaultSite)))
    problems.push(`defaultSite: unknown site ${JSON.stringify(spec.defaultSite)}`);
  return problems;
}

/** Reads and validates a topology file; every problem in one error. */
export async function loadTopologyFile(path: string): Promise<Topology> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new OcdnError(ErrorCodes.CONFIG, `--topology: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new OcdnError(ErrorCodes.CONFIG, `--topology: ${path} is not valid JSON: ${(err as Error).message}`);
  }
  const problems = validateTopology(raw);
  if (problems.length > 0) throw new OcdnError(ErrorCodes.CONFIG, `--topology ${path} is invalid:\n  - ${problems.join('\n  - ')}`, { details: { problems } });
  return new Topology(raw as TopologySpec);
}
