import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { LabResult } from './experiment.ts';

/** uPlot's browser build and stylesheet, read from node_modules to be inlined (the page loads nothing from anywhere). */
function uplotAssets(): { js: string; css: string } {
  const dir = join(createRequire(import.meta.url).resolve('uplot'), '..');
  return { js: readFileSync(join(dir, 'uPlot.iife.min.js'), 'utf8'), css: readFileSync(join(dir, 'uPlot.min.css'), 'utf8') };
}

interface Chart {
  title: string;
  /** Capacity fractions, ascending. */
  x: number[];
  series: { label: string; values: (number | null)[] }[];
}

/** One chart per steering × abr: byte hit ratio against capacity, one line per cache policy and the belady bound. */
export function hitRatioCharts(result: LabResult): Chart[] {
  const charts: Chart[] = [];
  const x = [...new Set(result.rows.map((r) => r.capacityFraction))].sort((a, b) => a - b);
  const policies = [...new Set(result.rows.map((r) => r.cachePolicy))];
  for (const steering of result.params.steering)
    for (const abr of result.params.abr) {
      const rows = result.rows.filter((r) => r.steering === steering && r.abr === abr);
      charts.push({
        title: `steering ${steering}, abr ${abr}`,
        x,
        series: policies.map((p) => ({
          label: p,
          values: x.map((c) => rows.find((r) => r.cachePolicy === p && r.capacityFraction === c)?.byteHitRatio ?? null),
        })),
      });
    }
  return charts;
}

/** Inside a <script>: JSON with "</" broken up so no value can close the element. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/<\//g, '<\\/');
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

const COLOURS: Record<string, string> = { lru: '#1f77b4', sieve: '#2ca02c', s3fifo: '#d62728', belady: '#555555' };

/** A self-contained page: the charts, the parameters and the rows as JSON; uPlot inlined. */
export function renderReport(result: LabResult, command: string): string {
  const { js, css } = uplotAssets();
  const charts = hitRatioCharts(result);
  const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ocdn lab: byte hit ratio vs capacity</title>
<style>${css}
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
pre { background: #f4f4f4; padding: 1em; overflow-x: auto; }
.chart { margin: 1.5em 0; }
</style>
</head>
<body>
<h1>Byte hit ratio vs cache capacity</h1>
<p>Command: <code>${escapeHtml(command)}</code>. Capacity is per edge, as a fraction of the catalog's bytes;
<b>belady</b> is the offline byte-aware furthest-next-use bound on the same request streams (dashed).</p>
<div id="charts"></div>
<h2>Parameters</h2>
<pre id="params"></pre>
<script>${js.replace(/<\/script/gi, '<\\/script')}</script>
<script>
const charts = ${scriptJson(charts)};
const colours = ${scriptJson(COLOURS)};
const result = ${scriptJson(result)};
document.getElementById('params').textContent = JSON.stringify(result.params, null, 2);
for (const c of charts) {
  const div = document.createElement('div');
  div.className = 'chart';
  document.getElementById('charts').appendChild(div);
  new uPlot({
    title: c.title,
    width: 720,
    height: 360,
    scales: { x: { time: false }, y: { range: [0, 1] } },
    axes: [
      { label: 'capacity (fraction of catalog, per edge)', values: (u, vs) => vs.map((v) => (v * 100).toFixed(1) + '%') },
      { label: 'byte hit ratio', values: (u, vs) => vs.map((v) => (v * 100).toFixed(0) + '%') },
    ],
    series: [
      { label: 'capacity', value: (u, v) => (v == null ? '-' : (v * 100).toFixed(1) + '%') },
      ...c.series.map((s) => ({
        label: s.label,
        stroke: colours[s.label] || '#9467bd',
        width: 2,
        dash: s.label === 'belady' ? [6, 4] : undefined,
        points: { show: true },
        value: (u, v) => (v == null ? '-' : (v * 100).toFixed(2) + '%'),
      })),
    ],
  }, [c.x, ...c.series.map((s) => s.values)], div);
}
</script>
</body>
</html>
`;
  return page;
}
