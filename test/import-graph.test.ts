import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './cli-run.ts';

/** Every .ts file below `dir`, as paths relative to the repository. */
function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile() && d.name.endsWith('.ts'))
    .map((d) => relative(ROOT, join(d.parentPath, d.name)));
}

/** The repository-relative targets of a file's relative value imports (static, dynamic and re-exports; `import type` is erased). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
    .split('\n')
    .filter((l) => !/^\s*(import|export) type\b/.test(l))
    .join('\n');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!);
  return specs.map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)));
}

/**
 * What loading `file` loads before anything runs: its static value imports, followed through our
 * files (`import type` and `import()` are not followed), as repository paths and package names.
 */
function staticGraph(file: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (f: string) => {
    if (files.has(f)) return;
    files.add(f);
    const text = readFileSync(join(ROOT, f), 'utf8');
    for (const m of text.matchAll(/^(?:import|export)\s+(?!type\b)[^;]*?\bfrom\s+'([^']+)'/gms)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) visit(relative(ROOT, resolve(ROOT, dirname(f), spec)));
      else if (!spec.startsWith('node:')) packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  };
  visit(file);
  return { files, packages };
}

describe('import graph', () => {
  it('finds the imports it checks (the scan itself works)', () => {
    expect(importsOf('cli/main.ts')).toContain('cli/cluster.ts');
    expect(sources('scripts').length).toBeGreaterThan(10);
  });

  it('no module under scripts/ imports cli/: the CLI is a front end of scripts, not the other way round', () => {
    const offenders = sources('scripts').flatMap((f) =>
      importsOf(f)
        .filter((t) => t.startsWith('cli/'))
        .map((t) => `${f} → ${t}`),
    );
    expect(offenders).toEqual([]);
  });

  it('common/ imports no value from outside common/: every part may use it', () => {
    const offenders = sources('common').flatMap((f) =>
      importsOf(f)
        .filter((t) => !t.startsWith('common/'))
        .map((t) => `${f} → ${t}`),
    );
    expect(offenders).toEqual([]);
  });

  it('the CLI loads no server, S3 SDK, Kafka client or HTTP client before a command runs: `ocdn --help` and a usage error stay quick', () => {
    const { files, packages } = staticGraph('cli/main.ts');
    expect(files.has('cli/edge.ts')).toBe(true);
    const heavy = [
      '@aws-sdk/client-s3',
      '@aws-sdk/lib-storage',
      's3rver',
      'kafkajs',
      'undici',
      'autocannon',
      'hls-parser',
      'prom-client',
      'lru-cache',
      '@sinclair/typebox',
    ];
    expect([...packages].filter((p) => heavy.includes(p))).toEqual([]);
    const servers = ['edge/server.ts', 'steering/server.ts', 'telemetry/aggregator.ts', 'console/server.ts', 'scripts/cluster/cluster.ts', 'lab/experiment.ts'];
    expect(servers.filter((f) => files.has(f))).toEqual([]);
  });
});
