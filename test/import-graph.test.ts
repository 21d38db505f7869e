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
});
