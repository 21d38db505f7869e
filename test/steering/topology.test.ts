import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isOcdnError } from '../../common/errors.ts';
import { DEFAULT_TOPOLOGY, loadTopologyFile, parseCidr, Topology, validateTopology } from '../../steering/topology.ts';

describe('topology', () => {
  const topo = new Topology(DEFAULT_TOPOLOGY);

  it('orders fallback sites by distance in the default topology', () => {
    expect(topo.siteIds).toEqual(['us-east', 'us-west', 'eu-west']);
    expect(topo.siteOrder('us-east')).toEqual(['us-east', 'us-west', 'eu-west']);
    expect(topo.siteOrder('us-west')).toEqual(['us-west', 'us-east', 'eu-west']);
    expect(topo.siteOrder('eu-west')).toEqual(['eu-west', 'us-east', 'us-west']);
    // A region only some edges report comes first, then every known site.
    expect(topo.siteOrder('local')).toEqual(['local', 'us-east', 'us-west', 'eu-west']);
  });

  it('puts explicit backups before distance order', () => {
    const t = new Topology({
      sites: [{ id: 'a', lat: 0, lon: 0, backups: ['c'] }, { id: 'b', lat: 0, lon: 1 }, { id: 'c', lat: 0, lon: 50 }, { id: 'd' }],
    });
    expect(t.siteOrder('a')).toEqual(['a', 'c', 'b', 'd']);
    expect(t.siteOrder('b')).toEqual(['b', 'a', 'c', 'd']);
    expect(t.siteOrder('d')).toEqual(['d', 'a', 'b', 'c']);
  });

  it('maps loopback source addresses to sites by coverage zone (longest prefix wins)', () => {
    expect(topo.zoneSite('127.1.0.9')).toBe('us-east');
    expect(topo.zoneSite('127.2.3.4')).toBe('us-west');
    expect(topo.zoneSite('::ffff:127.3.0.9')).toBe('eu-west');
    expect(topo.zoneSite('127.0.0.1')).toBe('us-east');
    expect(topo.zoneSite('10.0.0.1')).toBeUndefined();
    expect(topo.zoneSite('::1')).toBeUndefined();
    expect(topo.zoneSite('not an ip')).toBeUndefined();

    const t = new Topology({
      sites: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
      coverageZones: [
        { cidr: '10.0.0.0/8', site: 'a' },
        { cidr: '10.1.0.0/16', site: 'b' },
        { cidr: '10.1.2.128/25', site: 'c' },
      ],
      defaultSite: 'c',
    });
    expect(t.zoneSite('10.9.9.9')).toBe('a');
    expect(t.zoneSite('10.1.9.9')).toBe('b');
    expect(t.zoneSite('10.1.2.127')).toBe('b');
    expect(t.zoneSite('10.1.2.200')).toBe('c');
    expect(t.zoneSite('11.0.0.1')).toBeUndefined();
    expect(t.clientSite(undefined, '11.0.0.1')).toBe('c');
    expect(t.clientSite('', '10.1.9.9')).toBe('b');
    expect(t.clientSite('a', '10.1.9.9')).toBe('a');
  });

  it('parses CIDRs and masks host bits', () => {
    expect(parseCidr('192.168.1.77/24')).toEqual({ network: 0xc0a80100, mask: 0xffffff00, bits: 24 });
    expect(parseCidr('0.0.0.0/0')).toEqual({ network: 0, mask: 0, bits: 0 });
    expect(parseCidr('1.2.3.4/33')).toBeUndefined();
    expect(parseCidr('1.2.3/8')).toBeUndefined();
  });

  it('lists every problem of a bad topology', () => {
    const problems = validateTopology({
      sites: [{ id: 'a', lat: 100, backups: ['zz'] }, { id: 'a' }, { id: 'bad id!' }],
      coverageZones: [{ cidr: '10.0.0.0/40', site: 'q' }],
      defaultSite: 'nope',
      extra: 1,
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        'unknown field "extra" (expected sites, coverageZones, defaultSite)',
        'sites[0].lat: must be a number in [-90, 90]',
        'sites[0]: give both lat and lon, or neither',
        'sites[1].id: duplicate site "a"',
        'sites[2].id: must be 1-64 characters of A-Z a-z 0-9 . _ -',
        'sites[0].backups[0]: unknown site "zz"',
        'coverageZones[0].cidr: "10.0.0.0/40" is not an IPv4 CIDR like 10.0.0.0/8',
        'coverageZones[0].site: unknown site "q"',
        'defaultSite: unknown site "nope"',
      ]),
    );
    expect(validateTopology([])).toEqual(['the topology must be a JSON object with "sites"']);
    expect(validateTopology({ sites: [] })).toEqual(['"sites" must be a non-empty array']);
    expect(validateTopology(DEFAULT_TOPOLOGY)).toEqual([]);
  });

  describe('files', () => {
    let dir: string | undefined;
    afterAll(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('loads a valid file and refuses broken ones with clear errors', async () => {
      dir = await mkdtemp(join(tmpdir(), 'ocdn-topo-'));
      const good = join(dir, 'good.json');
      await writeFile(good, JSON.stringify({ sites: [{ id: 'x' }, { id: 'y', backups: ['x'] }], coverageZones: [{ cidr: '127.0.0.0/8', site: 'y' }] }));
      const t = await loadTopologyFile(good);
      expect(t.zoneSite('127.0.0.1')).toBe('y');
      expect(t.defaultSite).toBe('x');

      const notJson = join(dir, 'bad.json');
      await writeFile(notJson, '{ sites: ');
      await expect(loadTopologyFile(notJson)).rejects.toThrow(/is not valid JSON/);
      await expect(loadTopologyFile(join(dir, 'missing.json'))).rejects.toThrow(/cannot read .*ENOENT/);
      const invalid = join(dir, 'invalid.json');
      await writeFile(invalid, JSON.stringify({ sites: [{ id: 'x', backups: ['x'] }] }));
      const err = await loadTopologyFile(invalid).catch((e: unknown) => e);
      expect(isOcdnError(err, 'E_CONFIG')).toBe(true);
      expect((err as Error).message).toMatch(/sites\[0\]\.backups\[0\]: a site cannot back itself up/);
    });
  });
});
