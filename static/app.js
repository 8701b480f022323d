// The e2gan web page: edit an image with a concept, and administer
// adapters and fine-tuning jobs (finetune.js).  ES modules, no build step.
import {
  $, apiUrl, readProblem, showProblem, clearProblem, networkProblem, formatBytes, conceptNameOk, authHeaders,
  fillDefinitions, makeDropZone,
} from './util.js';
import { setupFinetune, onTokenChange } from './finetune.js';

const TOKEN_KEY = 'e2gan.adminToken';

// ---- concepts ---------------------------------------------------------

let concepts = [];

function fillSelect(select, keep) {
  select.replaceChildren(...concepts.map((c) => {
    const o = document.createElement('option');
    o.value = c.name;
    o.textContent = c.kind === 'adapter' ? `${c.name} (adapter)` : c.name;
    return o;
  }));
  if (concepts.some((c) => c.name === keep)) select.value = keep;
}

function fillConceptTable() {
  const body = $('concept-table').tBodies[0];
  body.replaceChildren(...concepts.map((c) => {
    const tr = document.createElement('tr');
    const name = document.createElement('td');
    name.textContent = c.name;
    const kind = document.createElement('td');
    kind.textContent = c.kind === 'adapter' && Number.isFinite(c.file_bytes)
      ? `adapter, ${formatBytes(c.file_bytes)}` : (c.kind || '');
    const action = document.createElement('td');
    action.className = 'actions-cell';
    if (c.kind !== 'base') {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'danger small';
      b.textContent = 'Delete';
      b.dataset.name = c.name;
      b.setAttribute('aria-label', `Delete ${c.name}`);
      b.addEventListener('click', onDeleteClick);
      action.append(b);
    }
    tr.append(name, kind, action);
    return tr;
  }));
}

async function loadConcepts() {
  const select = $('concept');
  const select2 = $('concept2');
  let res;
  try {
    res = await fetch(apiUrl('v1/concepts'), { headers: { Accept: 'application/json' } });
  } catch (err) {
    showProblem($('edit-error'), networkProblem(err));
    return;
  }
  if (!res.ok) {
    const problem = await readProblem(res);
    showProblem($('edit-error'), problem);
    // 503: the server is still loading its model or is overloaded; ask again.
    if (res.status === 503) setTimeout(loadConcepts, 1000 * (Number(problem.retryAfter) || 2));
    return;
  }
  // The first list that loads replaces an earlier failure to load it.
  if (document.body.dataset.concepts !== 'loaded') clearProblem($('edit-error'));
  concepts = (await res.json()).concepts; // [{name, kind: "base"|"adapter", ...}]
  const keep = select.value;
  const keep2 = select2.value;
  fillSelect(select, keep);
  fillSelect(select2, keep2);
  if (!concepts.some((c) => c.name === keep2) && concepts.length > 1) select2.selectedIndex = 1;
  select.disabled = concepts.length === 0;
  if (concepts.length === 0) {
    const o = document.createElement('option');
    o.value = '';
    o.textContent = 'No concepts available';
    select.append(o);
  }
  $('blend').disabled = concepts.length < 2;
  fillConceptTable();
  document.body.dataset.concepts = 'loaded';
  updateForm();
}

// ---- the edit form ----------------------------------------------------

let inputFile = null;
let beforeUrl = null;
let afterUrl = null;

const fmt2 = (x) => String(Math.round(x * 100) / 100);
// The image formats below (names, media types, the lossy ones) copy the
// table in engine/image.c (e2g_image_formats), which is what the server
// accepts and writes; no API answer carries it.  A format added there is
// added here (LOSSY, EXT) and in index.html (the #format options and the
// #image accept list) too.
const LOSSY = new Set(['jpeg', 'webp']); // the formats that take a quality

// The concept parameter: one name, or a blend "a:0.7,b:0.3".
function conceptSpec() {
  const a = $('concept').value;
  if (!$('blend').checked) return a;
  const b = $('concept2').value;
  const w = Number($('weight2').value);
  if (w <= 0) return a;
  if (w >= 1) return b;
  return `${a}:${fmt2(1 - w)},${b}:${fmt2(w)}`;
}

function editUrl() {
  const q = new URLSearchParams();
  q.set('concept', conceptSpec());
  q.set('strength', $('strength').value);
  const format = $('format').value;
  q.set('format', format);
  if (LOSSY.has(format) && $('quality').value) q.set('quality', $('quality').value);
  return apiUrl(`v1/edits?${q}`);
}

function updateForm() {
  $('strength-out').value = Number($('strength').value).toFixed(2);
  $('weight2-out').value = Number($('weight2').value).toFixed(2);
  $('blend-fields').hidden = !$('blend').checked;
  $('quality-field').hidden = $('quality-hint').hidden = !LOSSY.has($('format').value);
  const ready = inputFile && $('concept').value;
  $('spec').textContent = $('concept').value ? decodeURIComponent(editUrl().search.slice(1)) : '—';
  $('edit-button').disabled = !ready || document.body.dataset.busy === '1';
}

function setImage(file) {
  inputFile = file;
  if (beforeUrl) URL.revokeObjectURL(beforeUrl);
  beforeUrl = URL.createObjectURL(file);
  const before = $('before');
  before.hidden = false;
  before.src = beforeUrl;
  $('before-size').textContent = '';
  $('drop-hint').textContent = `${file.name} · ${formatBytes(file.size)}`;
  clearResult();
  clearProblem($('edit-error'));
  updateForm();
}

function clearResult() {
  if (afterUrl) URL.revokeObjectURL(afterUrl);
  afterUrl = null;
  $('after').hidden = true;
  $('after').removeAttribute('src');
  $('after-size').textContent = '';
  $('download').hidden = true;
  $('timings').hidden = true;
}

// Server-Timing: "queue;dur=1.2, compute;dur=30;desc=\"engine\"".
function parseServerTiming(value) {
  return value.split(',').map((entry) => {
    const [name, ...params] = entry.trim().split(';');
    const out = { name: name.trim() };
    for (const p of params) {
      const [k, v = ''] = p.split('=');
      out[k.trim()] = v.trim().replace(/^"(.*)"$/, '$1');
    }
    return out;
  }).filter((e) => e.name);
}

function showTimings(res, roundTripMs, bytes) {
  const rows = [];
  const st = res.headers.get('Server-Timing');
  if (st) {
    for (const t of parseServerTiming(st)) {
      const label = t.desc ? `${t.name} (${t.desc})` : t.name;
      rows.push([label, t.dur !== undefined ? `${Number(t.dur).toFixed(1)} ms` : '—']);
    }
  }
  // The service's own headers (concept, strength, batch size, …) and the
  // request id, as sent.
  for (const [name, value] of res.headers) {
    if (name.startsWith('x-e2gan-') || name === 'x-request-id') {
      const label = name.replace(/^x-(e2gan-)?/, '').replace(/-/g, ' ');
      rows.push([label, value]);
    }
  }
  rows.push(['round trip', `${roundTripMs.toFixed(0)} ms`]);
  rows.push(['result', `${res.headers.get('Content-Type') || '?'}, ${formatBytes(bytes)}`]);
  const dl = $('timings');
  fillDefinitions(dl, rows, { wide: 12, full: 24 });
  dl.hidden = false;
}

const EXT = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/webp': 'webp' }; // see LOSSY

async function onEdit(ev) {
  ev.preventDefault();
  if (!inputFile || !$('concept').value) return;
  if ($('blend').checked && $('concept').value === $('concept2').value) {
    showProblem($('edit-error'), { title: 'Pick two different concepts to blend' });
    return;
  }
  clearProblem($('edit-error'));
  clearResult();
  document.body.dataset.busy = '1';
  $('after-frame').setAttribute('aria-busy', 'true');
  $('edit-status').textContent = 'Editing…';
  updateForm();
  const t0 = performance.now();
  try {
    const res = await fetch(editUrl(), {
      method: 'POST',
      headers: { 'Content-Type': inputFile.type || 'application/octet-stream' },
      body: inputFile,
    });
    if (!res.ok) {
      showProblem($('edit-error'), await readProblem(res));
      $('edit-status').textContent = 'The edit failed.';
      return;
    }
    const blob = await res.blob();
    const roundTrip = performance.now() - t0;
    afterUrl = URL.createObjectURL(blob);
    const after = $('after');
    after.src = afterUrl;
    after.hidden = false;
    await after.decode().catch(() => {});
    $('after-size').textContent = after.naturalWidth ? `${after.naturalWidth}×${after.naturalHeight}` : '';
    const stem = inputFile.name.replace(/\.[^.]*$/, '') || 'image';
    const tag = conceptSpec().replace(/[^A-Za-z0-9._-]+/g, '_');
    const a = $('download');
    a.href = afterUrl;
    a.download = `${stem}-${tag}.${EXT[blob.type] || $('format').value}`;
    a.hidden = false;
    showTimings(res, roundTrip, blob.size);
    $('edit-status').textContent = `Edited with ${conceptSpec()} at strength ${Number($('strength').value).toFixed(2)}.`;
  } catch (err) {
    showProblem($('edit-error'), networkProblem(err));
    $('edit-status').textContent = 'The edit failed.';
  } finally {
    delete document.body.dataset.busy;
    $('after-frame').removeAttribute('aria-busy');
    updateForm();
  }
}

function setupDrop() {
  const drop = $('drop');
  const input = $('image');
  input.addEventListener('change', () => { if (input.files[0]) setImage(input.files[0]); });
  makeDropZone(drop, (files) => { if (files[0]) setImage(files[0]); });
  // A file dropped beside the drop zone must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
}

// ---- admin ------------------------------------------------------------

async function adminRequest(method, name, body) {
  clearProblem($('admin-error'));
  $('admin-status').textContent = '';
  const headers = authHeaders();
  if (body) headers['Content-Type'] = 'application/octet-stream';
  try {
    const res = await fetch(apiUrl(`v1/concepts/${encodeURIComponent(name)}`), { method, headers, body });
    if (!res.ok) {
      showProblem($('admin-error'), await readProblem(res));
      return null;
    }
    return res;
  } catch (err) {
    showProblem($('admin-error'), networkProblem(err));
    return null;
  }
}

async function onUpload(ev) {
  ev.preventDefault();
  const name = $('adapter-name');
  const file = $('adapter-file').files[0];
  if (!conceptNameOk(name.value)) {
    showProblem($('admin-error'), { title: 'Invalid concept name', detail: $('adapter-name-hint').textContent });
    name.focus();
    return;
  }
  if (!file) {
    showProblem($('admin-error'), { title: 'Choose an adapter file to upload' });
    $('adapter-file').focus();
    return;
  }
  $('upload-button').disabled = true;
  $('admin-status').textContent = `Uploading ${file.name}…`;
  const res = await adminRequest('PUT', name.value, file);
  $('upload-button').disabled = false;
  if (!res) { $('admin-status').textContent = ''; return; }
  $('admin-status').textContent = res.status === 201 ? `Added concept ${name.value}.` : `Replaced concept ${name.value}.`;
  await loadConcepts();
}

// The first click arms the button, the second (within a few seconds) deletes.
async function onDeleteClick(ev) {
  const b = ev.currentTarget;
  const name = b.dataset.name;
  if (b.dataset.armed !== '1') {
    b.dataset.armed = '1';
    b.textContent = 'Confirm delete';
    b.setAttribute('aria-label', `Confirm: delete ${name}`);
    setTimeout(() => {
      if (!b.isConnected) return;
      delete b.dataset.armed;
      b.textContent = 'Delete';
      b.setAttribute('aria-label', `Delete ${name}`);
    }, 4000);
    return;
  }
  b.disabled = true;
  const res = await adminRequest('DELETE', name);
  b.disabled = false;
  if (!res) return;
  $('admin-status').textContent = `Deleted concept ${name}.`;
  await loadConcepts();
}

function setupAdmin() {
  const token = $('token');
  token.value = sessionStorage.getItem(TOKEN_KEY) || '';
  token.addEventListener('input', () => {
    if (token.value) sessionStorage.setItem(TOKEN_KEY, token.value);
    else sessionStorage.removeItem(TOKEN_KEY);
    onTokenChange();
  });
  $('upload-form').addEventListener('submit', onUpload);
}

// "Try it" after a fine-tune: the new concept, selected in the edit form.
async function tryConcept(name) {
  if (!concepts.some((c) => c.name === name)) await loadConcepts();
  if (!concepts.some((c) => c.name === name)) return false;
  $('concept').value = name;
  $('blend').checked = false;
  updateForm();
  $('edit-heading').scrollIntoView({ behavior: 'smooth', block: 'start' });
  $('concept').focus({ preventScroll: true });
  $('edit-status').textContent = inputFile
    ? `Concept ${name} selected; press Edit to try it.`
    : `Concept ${name} selected; choose an image and press Edit to try it.`;
  return true;
}

// ---- start ------------------------------------------------------------

function start() {
  setupDrop();
  setupAdmin();
  const form = $('edit-form');
  form.addEventListener('submit', onEdit);
  form.addEventListener('input', updateForm);
  form.addEventListener('change', updateForm);
  $('before').addEventListener('load', () => {
    const img = $('before');
    $('before-size').textContent = `${img.naturalWidth}×${img.naturalHeight}`;
  });
  $('before').addEventListener('error', () => {
    $('before').hidden = true;
    $('before-empty').textContent = 'No preview';
    $('before-size').textContent = '(no preview)';
  });
  updateForm();
  loadConcepts();
  setupFinetune({ reloadConcepts: loadConcepts, tryConcept });
}

start();
