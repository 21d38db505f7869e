export const bytes = (n) => {
  if (!Number.isFinite(n) || n <= 0) return '0 B';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log10(n) / 3));
  return `${(n / 10 ** (3 * i)).toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
};
export const bits = (n) => (Number.isFinite(n) ? `${(n / 1e6).toFixed(1)} Mbit/s` : '-');
export const pct = (v) => (v === null || v === undefined ? '-' : `${(v * 100).toFixed(1)}%`);

/** A table cell with text only (values from the cluster are never markup). */
export function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = String(text);
  if (cls) td.className = cls;
  return td;
}
