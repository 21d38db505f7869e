/**
 * Live QoE charts (uPlot), one per metric, one line per edge / region / title, fed by the
 * aggregator's stream through GET /api/qoe/stream (`event: qoe`, data = a QoeResponse).
 */

const METRICS = [
  { key: 'vstP50Ms', title: 'video start time p50 (ms)', scale: 1 },
  { key: 'vstP95Ms', title: 'video start time p95 (ms)', scale: 1 },
  { key: 'rebufferRatio', title: 'rebuffer ratio (%)', scale: 100 },
  { key: 'avgBitrate', title: 'average bitrate (kbit/s)', scale: 1e-3 },
  { key: 'errors', title: 'errors', scale: 1 },
  { key: 'sessions', title: 'sessions started', scale: 1 },
  // Why bytes missed (steering decisions joined with edge access records): MB per window.
  { key: 'localHitBytes', title: 'local-hit bytes (MB)', scale: 1e-6 },
  { key: 'contentMissBytes', title: 'content-miss bytes (MB)', scale: 1e-6 },
  { key: 'healthMissBytes', title: 'health-miss bytes (MB)', scale: 1e-6 },
  { key: 'otherMissBytes', title: 'other-miss bytes (MB)', scale: 1e-6 },
];
const COLORS = ['#2e6fd8', '#e67e22', '#27ae60', '#8e44ad', '#c0392b', '#16a085', '#7f8c8d', '#d35400'];
const MAX_SERIES = 8;

/** A chart fills its grid cell (style.css .charts). */
const widthOf = (box) => Math.max(280, Math.floor(box.getBoundingClientRect().width) || 420);

export function startQoeCharts({ container, note, tabs }) {
  const charts = new Map();
  let es;
  let dim = 'edge';
  window.ocdnQoe = { dim, snapshots: 0, charts: 0 };

  function chartFor(metric, values) {
    const key = `${metric.key}|${values.join(',')}`;
    const have = charts.get(metric.key);
    if (have && have.key === key) return have;
    let box = have?.box;
    if (have) have.plot.destroy();
    else {
      box = document.createElement('div');
      box.className = 'chart';
      box.dataset.metric = metric.key;
      const h = document.createElement('h4');
      h.textContent = metric.title;
      box.append(h);
      container.append(box);
    }
    const plot = new window.uPlot(
      {
        width: widthOf(box),
        height: 180,
        series: [{}, ...values.map((v, i) => ({ label: v === '' ? '(none)' : v, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))],
        axes: [{}, { size: 50 }],
        legend: { live: false },
      },
      [[], ...values.map(() => [])],
      box,
    );
    const c = { key, plot, box };
    charts.set(metric.key, c);
    window.ocdnQoe.charts = charts.size;
    return c;
  }

  function render(r) {
    window.ocdnQoe.snapshots++;
    window.ocdnQoe.last = { by: r.by, windows: r.windows.length, totals: r.totals.length, generatedAt: r.generatedAt };
    const values = r.totals
      .slice()
      .sort((a, b) => b.events - a.events)
      .slice(0, MAX_SERIES)
      .map((t) => t.value)
      .sort();
    const xs = r.windows.map((w) => w.start / 1000);
    note.textContent = `${r.windows.length} windows of ${r.windowMs / 1000} s by ${r.by}; ${values.length} ${r.by === 'all' ? '' : `${r.by}s`} · ${new Date(r.generatedAt).toLocaleTimeString()}`;
    note.classList.remove('error');
    for (const m of METRICS) {
      const data = [xs];
      for (const v of values) {
        data.push(
          r.windows.map((w) => {
            const row = w.rows.find((x) => x.value === v);
            const y = row ? row[m.key] : null;
            return y === null || y === undefined ? null : y * m.scale;
          }),
        );
      }
      chartFor(m, values).plot.setData(data);
    }
  }

  function open(d) {
    dim = d;
    window.ocdnQoe.dim = d;
    es?.close();
    for (const c of charts.values()) {
      c.plot.destroy();
      c.box.remove();
    }
    charts.clear();
    note.textContent = `waiting for QoE by ${d}…`;
    es = new EventSource(`/api/qoe/stream?by=${encodeURIComponent(d)}&last=5m`);
    es.addEventListener('qoe', (ev) => render(JSON.parse(ev.data)));
    // An `error` event with data is the console's or the aggregator's word; without, the connection dropped.
    es.addEventListener('error', (ev) => {
      let text = 'QoE stream lost; reconnecting…';
      if (ev.data) {
        try {
          const e = JSON.parse(ev.data).error;
          text = `${e.code}: ${e.message}`;
        } catch {
          text = String(ev.data);
        }
      }
      note.textContent = text;
      note.classList.add('error');
    });
  }

  window.addEventListener('resize', () => {
    for (const c of charts.values()) c.plot.setSize({ width: widthOf(c.box), height: 180 });
  });

  for (const b of tabs.querySelectorAll('button[data-dim]')) {
    b.addEventListener('click', () => {
      for (const x of tabs.querySelectorAll('button')) x.classList.toggle('active', x === b);
      open(b.dataset.dim);
    });
  }
  open(dim);
}
