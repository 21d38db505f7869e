/** The console page: log-in check, then the cluster table, the QoE charts and the player. */
import { catalog, loadSession } from './api.js';
import { startClusterView } from './cluster-view.js';
import { bits, bytes, cell } from './format.js';
import { createPlayer } from './player.js';
import { startQoeCharts } from './qoe-charts.js';

const $ = (id) => document.getElementById(id);
const status = $('status');

function renderPlayer(s) {
  $('player-state').textContent =
    `${s.state}${s.title ? ` · ${s.title}` : ''}${s.sessionId ? ` · session ${s.sessionId.slice(0, 8)}` : ''}` +
    ` · t=${s.currentTime.toFixed(1)} s · ${s.fragments.length} fragments · events sent ${s.events.sent}${s.events.failed ? `, failed ${s.events.failed}` : ''}` +
    (s.errors.length ? ` · last error ${s.errors.at(-1).details}` : '');
  const rows = s.fragments.slice(-30).map((f) => {
    const tr = document.createElement('tr');
    tr.append(
      cell(f.sn),
      cell(f.t.toFixed(1)),
      cell(f.rendition, 'text'),
      cell(f.pathway ?? '-', 'text'),
      cell(f.edgeId ?? '?', 'text'),
      cell(f.xCache ?? '?', 'text'),
      cell(bytes(f.bytes)),
      cell(f.ms),
      cell(bits(f.bps)),
    );
    return tr;
  });
  $('fragments')
    .querySelector('tbody')
    .replaceChildren(...rows.reverse());
  const items = s.pathways.map((p) => {
    const li = document.createElement('li');
    const what =
      p.kind === 'steering-manifest'
        ? `steering manifest: priority ${(p.priority ?? []).join(' > ')}`
        : p.kind === 'fragment'
          ? `fragment ${p.sn} switched pathway ${p.from} → ${p.pathway}`
          : p.kind === 'initial'
            ? `master: pathway ${p.pathway ?? '(first)'}`
            : `level switched on pathway ${p.pathway} (${p.rendition})`;
    li.textContent = `${(p.at / 1000).toFixed(1)} s: ${what}`;
    return li;
  });
  $('pathways').replaceChildren(...items);
}

async function main() {
  let session;
  try {
    session = await loadSession();
  } catch (err) {
    status.textContent = `console API failed: ${err.message}`;
    return;
  }
  if (!session) {
    $('login-needed').hidden = false;
    status.textContent = 'not logged in';
    return;
  }
  $('main').hidden = false;
  status.textContent = `steering ${session.steeringUrl}`;

  startClusterView({ table: $('edges'), note: $('cluster-note'), chaosLog: $('chaos-log'), originDown: $('origin-down'), originUp: $('origin-up') });
  startQoeCharts({ container: $('charts'), note: $('qoe-note'), tabs: $('qoe-dims') });

  const player = createPlayer({ video: $('video'), steeringUrl: session.steeringUrl, onChange: renderPlayer });
  const select = $('title-select');
  try {
    const c = await catalog();
    select.replaceChildren(
      ...c.titles.map((t) => {
        const o = document.createElement('option');
        o.value = t.id;
        o.textContent = `${t.id} (${Math.round(t.durationSec)} s)`;
        return o;
      }),
    );
  } catch (err) {
    $('player-state').textContent = `no catalog: ${err.message}`;
  }
  $('play').addEventListener('click', () => select.value && player.play(select.value));
  $('stop').addEventListener('click', () => player.stop());
  window.ocdnConsole = { ready: true };
}

main();
