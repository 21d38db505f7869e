/** The cluster table, fed by GET /api/cluster/stream (`event: cluster`), with each edge's chaos buttons. */
import { chaos } from './api.js';
import { bits, bytes, cell, pct } from './format.js';

export function startClusterView({ table, note, chaosLog, originDown, originUp }) {
  const body = table.querySelector('tbody');
  const busy = new Set();
  const report = (line, error = false) => {
    chaosLog.textContent = line;
    chaosLog.classList.toggle('error', error);
  };

  async function act(target, label, run) {
    if (busy.has(target)) return;
    busy.add(target);
    report(`${label}…`);
    try {
      const log = await run();
      report(log.join(' · ') || `${label}: done`);
    } catch (err) {
      report(`${label}: ${err.message}`, true);
    } finally {
      busy.delete(target);
    }
  }

  const button = (text, cls, onClick) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    if (cls) b.className = cls;
    b.addEventListener('click', onClick);
    return b;
  };

  function render(snap) {
    window.ocdnCluster = snap;
    note.textContent = snap.steeringError ?? `${snap.edges.length} edges from ${snap.steeringUrl} · ${new Date(snap.generatedAt).toLocaleTimeString()}`;
    note.classList.toggle('error', Boolean(snap.steeringError));
    const rows = snap.edges.map((e) => {
      const tr = document.createElement('tr');
      tr.dataset.edge = e.id;
      const health = e.healthy ? 'up' : `down (${e.reason})`;
      tr.append(
        cell(e.id, 'text'),
        cell(e.region, 'text'),
        cell(health, `text ${e.healthy ? 'up' : 'down'}`),
        // Steering's load figure is the edge's egress (what hrw-bounded balances).
        cell(bits(e.load)),
        cell(e.rps.toFixed(0)),
        cell(e.inFlight),
        cell(`${bytes(e.usedBytes)} / ${bytes(e.capacityBytes)}`),
        cell(e.metricsError ? `- (${e.metricsError})` : pct(e.hitRatio)),
        cell(bytes(e.bytesServed)),
        cell(bytes(e.originBytes)),
        cell(e.titles),
      );
      const actions = document.createElement('td');
      actions.append(
        button('kill', 'danger', () => act(e.id, `kill ${e.id}`, () => chaos('kill-edge', { id: e.id }))),
        ' ',
        button('restore', '', () => act(e.id, `restore ${e.id}`, () => chaos('restore', { id: e.id }))),
      );
      tr.append(actions);
      return tr;
    });
    body.replaceChildren(...rows);
  }

  originDown.addEventListener('click', () => act('s3', 'origin outage on', () => chaos('origin-outage', { on: true })));
  originUp.addEventListener('click', () => act('s3', 'origin outage off', () => chaos('origin-outage', { on: false })));

  const es = new EventSource('/api/cluster/stream');
  es.addEventListener('cluster', (ev) => render(JSON.parse(ev.data)));
  es.addEventListener('error', () => {
    note.textContent = 'cluster stream lost; reconnecting…';
    note.classList.add('error');
  });
  return es;
}
