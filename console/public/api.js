/** The console's own API, same origin: the session cookie goes along by itself, the CSRF token in a header. */

let csrfToken = '';

/** The session (CSRF token, steering URL), or null when not logged in. */
export async function loadSession() {
  const res = await fetch('/api/session', { credentials: 'same-origin' });
  if (res.status === 401) return null;
  if (!res.ok) throw new Error(await errorText(res));
  const s = await res.json();
  csrfToken = s.csrfToken;
  return s;
}

export async function errorText(res) {
  const text = await res.text();
  try {
    const e = JSON.parse(text).error;
    if (e?.code) return `${e.code}: ${e.message}`;
  } catch {
    // not an error body: its first line says it
  }
  return `${res.status} ${text.split('\n')[0].slice(0, 200)}`;
}

/** POST /api/chaos/<action> with the CSRF token; resolves with the chaos log lines. */
export async function chaos(action, body) {
  const res = await fetch(`/api/chaos/${action}`, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrfToken },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(await errorText(res));
  return (await res.json()).log;
}

export async function catalog() {
  const res = await fetch('/api/catalog', { credentials: 'same-origin' });
  if (!res.ok) throw new Error(await errorText(res));
  return res.json();
}
