// Helpers shared by the page's modules: elements, URLs, problems (errors
// as the server reports them), sizes, the admin token.
export const $ = (id) => document.getElementById(id);

// Every URL is relative to the page, so the page also works when the
// server sits behind a path prefix.
export const apiUrl = (path) => new URL(path, document.baseURI);

// ---- errors -----------------------------------------------------------

// Reads an error response: application/problem+json (RFC 9457) as the
// server sends it, or, from anything in between (a proxy), the status line
// and whatever text came back.
export async function readProblem(res) {
  let body = '';
  try { body = await res.text(); } catch { /* the body is optional */ }
  let problem = null;
  if (/json/i.test(res.headers.get('Content-Type') || '')) {
    try { problem = JSON.parse(body); } catch { /* not JSON after all */ }
  }
  const p = problem && typeof problem === 'object' ? problem : {};
  return {
    status: p.status ?? res.status,
    title: p.title || res.statusText || 'Request failed',
    detail: problem ? p.detail || '' : body.trim().slice(0, 500),
    requestId: p.request_id || res.headers.get('X-Request-Id') || '',
    retryAfter: res.headers.get('Retry-After') || '',
  };
}

// Shows a problem ({title, status?, detail?, requestId?, retryAfter?}) in
// one of the page's .problem boxes.
export function showProblem(el, problem) {
  el.replaceChildren();
  const title = document.createElement('strong');
  title.className = 'problem-title';
  title.textContent = problem.status ? `${problem.title} (${problem.status})` : problem.title;
  el.append(title);
  if (problem.detail) {
    const detail = document.createElement('p');
    detail.className = 'problem-detail';
    detail.textContent = problem.detail;
    el.append(detail);
  }
  const extra = [];
  if (problem.retryAfter) extra.push(`Retry after ${problem.retryAfter} s.`);
  if (problem.requestId) extra.push(`Request id: ${problem.requestId}`);
  if (extra.length) {
    const small = document.createElement('p');
    small.className = 'problem-extra';
    small.textContent = extra.join(' · ');
    el.append(small);
  }
  el.hidden = false;
}

export function clearProblem(el) {
  el.hidden = true;
  el.replaceChildren();
}

export const networkProblem = (err) => ({ title: 'The server could not be reached', detail: String(err.message || err) });

// ---- small things -----------------------------------------------------

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// A concept name as the server accepts it: 1–64 of [A-Za-z0-9._-], not
// starting with ".".
export const conceptNameOk = (name) => /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/.test(name);

// The admin token as request headers (none without a token).
export function authHeaders() {
  const token = $('token').value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export const hasToken = () => $('token').value.trim() !== '';

// Fills a <dl> with [term, value] rows, one <div> each; long values get a
// wider grid cell ('wide' past `wide` characters, 'full' past `full`).
export function fillDefinitions(dl, rows, { wide = 12, full = Infinity } = {}) {
  dl.replaceChildren(...rows.map(([term, value]) => {
    const row = document.createElement('div');
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    row.append(dt, dd);
    if (value.length > full) row.className = 'full';
    else if (value.length > wide) row.className = 'wide';
    return row;
  }));
}

// Makes `zone` a drop target for files: highlighted while files are
// dragged over it, onFiles(FileList) when they are dropped.
export function makeDropZone(zone, onFiles) {
  zone.addEventListener('dragenter', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragover', (e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'copy'; });
  zone.addEventListener('dragleave', (e) => { if (!zone.contains(e.relatedTarget)) zone.classList.remove('over'); });
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    onFiles(e.dataTransfer.files);
  });
}
