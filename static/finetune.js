// Fine-tuning through the page (admin): choose pairs of images, start a job
// (POST /v1/finetunes, multipart), follow it live (GET …/events read with
// fetch, a progress bar, a loss chart), cancel or remove it, and try the
// new concept in the edit form when it is done.
import {
  $, apiUrl, readProblem, showProblem, clearProblem, networkProblem, formatBytes, conceptNameOk,
  authHeaders, hasToken, fillDefinitions, makeDropZone,
} from './util.js';
import { readEventStream } from './sse.js';
import { drawLossChart } from './chart.js';

const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
const IMAGE = /^(.+)\.(png|jpe?g|webp)$/i; // the formats the server decodes
const ROLE_IMAGE = /^(.+)\.(src|dst)\.(png|jpe?g|webp)$/i;

let hooks = { reloadConcepts: async () => {}, tryConcept: async () => false };

// ---- choosing pairs -----------------------------------------------------

// The chosen files by name: from the pair picker / drop zone (named
// STEM.src.EXT / STEM.dst.EXT), and from the sources and targets pickers
// (matched by file name).  Choosing more adds to them.
const picked = { pairs: new Map(), sources: new Map(), targets: new Map() };

// The server takes plain names of [A-Za-z0-9._-] not starting with ".".
const safeStem = (stem) => stem.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^\./, '_').slice(0, 180);

// The pairs the chosen files make, and what keeps the others out of a pair:
// {pairs: [{stem, src, dst}], problems: [text]}.
function findPairs() {
  const stems = new Map(); // stem -> {src: [File], dst: [File]}
  const problems = [];
  const add = (stem, role, file) => {
    const key = safeStem(stem);
    if (!stems.has(key)) stems.set(key, { src: [], dst: [] });
    stems.get(key)[role].push(file);
  };
  for (const file of picked.pairs.values()) {
    const m = ROLE_IMAGE.exec(file.name);
    if (m) add(m[1], m[2].toLowerCase(), file);
    else if (IMAGE.test(file.name)) problems.push(`${file.name} is not named STEM.src.EXT or STEM.dst.EXT (or choose it as a source or a target).`);
    else problems.push(`${file.name} is not a PNG, JPEG or WebP image.`);
  }
  for (const [role, files] of [['src', picked.sources], ['dst', picked.targets]]) {
    for (const file of files.values()) {
      const m = IMAGE.exec(file.name);
      if (m) add(m[1].replace(/\.(src|dst)$/i, ''), role, file);
      else problems.push(`${file.name} is not a PNG, JPEG or WebP image.`);
    }
  }
  const pairs = [];
  for (const [stem, { src, dst }] of [...stems].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (src.length > 1 || dst.length > 1) {
      const [what, files] = src.length > 1 ? ['sources', src] : ['targets', dst];
      problems.push(`Pair ${stem} has two ${what}: ${files.map((f) => f.name).join(', ')}.`);
    } else if (!src.length || !dst.length) {
      const [lone, missing] = src.length ? [src[0], 'target'] : [dst[0], 'source'];
      const ext = lone.name.slice(lone.name.lastIndexOf('.'));
      problems.push(`${lone.name} has no ${missing} (${stem}.${missing === 'target' ? 'dst' : 'src'}${ext}, or a ${missing} of the same name).`);
    } else {
      pairs.push({ stem, src: src[0], dst: dst[0] });
    }
  }
  return { pairs, problems };
}

function renderPairs() {
  const { pairs, problems } = findPairs();
  const count = picked.pairs.size + picked.sources.size + picked.targets.size;
  const items = pairs.map((p) => {
    const li = document.createElement('li');
    const stem = document.createElement('strong');
    stem.textContent = p.stem;
    const files = document.createElement('span');
    files.className = 'dim';
    files.textContent = `${p.src.name} → ${p.dst.name}`;
    li.append(stem, ' ', files);
    return li;
  });
  for (const text of problems) {
    const li = document.createElement('li');
    li.className = 'pair-bad';
    li.textContent = text;
    items.push(li);
  }
  $('ft-pair-list').replaceChildren(...items);
  const bytes = pairs.reduce((n, p) => n + p.src.size + p.dst.size, 0);
  let summary = 'No images chosen yet.';
  if (count) {
    summary = `${pairs.length} ${pairs.length === 1 ? 'pair' : 'pairs'} found (${formatBytes(bytes)})`;
    if (problems.length) summary += ` · ${problems.length} ${problems.length === 1 ? 'file' : 'files'} left out`;
    summary += '.';
  }
  $('ft-pairs-summary').textContent = summary;
  $('ft-pairs').dataset.pairs = String(pairs.length);
  $('ft-pairs').dataset.problems = String(problems.length);
  $('ft-clear').hidden = count === 0;
}

function addFiles(map, files) {
  for (const file of files) map.set(file.name, file);
  clearProblem($('ft-error'));
  renderPairs();
}

function setupPairPickers() {
  for (const [id, map] of [['ft-files', picked.pairs], ['ft-sources', picked.sources], ['ft-targets', picked.targets]]) {
    const input = $(id);
    input.addEventListener('change', () => {
      addFiles(map, input.files);
      input.value = ''; // the list above keeps them; choosing the same file again adds it again
    });
  }
  makeDropZone($('ft-drop'), (files) => addFiles(picked.pairs, files));
  $('ft-clear').addEventListener('click', () => {
    for (const map of Object.values(picked)) map.clear();
    clearProblem($('ft-error'));
    renderPairs();
    $('ft-files').focus();
  });
  renderPairs();
}

// ---- starting a job ----------------------------------------------------------

// The options as form fields; an empty number field means the server's
// default.  Throws {title, detail} for a value out of bounds.
function optionFields() {
  const fields = [];
  for (const input of $('ft-form').querySelectorAll('.ft-options input[name]')) {
    if (input.type === 'checkbox') {
      if (input.name === 'replace') { if (input.checked) fields.push(['replace', 'true']); }
      else fields.push([input.name, String(input.checked)]);
      continue;
    }
    if (input.value.trim() === '') continue;
    if (!input.checkValidity()) {
      const label = input.labels[0] ? input.labels[0].textContent.trim() : input.name;
      if (input.closest('details')) input.closest('details').open = true;
      input.focus();
      throw { title: `Invalid option: ${label}`, detail: input.validationMessage };
    }
    fields.push([input.name, input.value.trim()]);
  }
  return fields;
}

const extOf = (file) => IMAGE.exec(file.name)[2].toLowerCase();

async function onStart(ev) {
  ev.preventDefault();
  const error = $('ft-error');
  clearProblem(error);
  const name = $('ft-concept');
  if (!conceptNameOk(name.value)) {
    showProblem(error, { title: 'Invalid concept name', detail: $('ft-concept-hint').textContent });
    name.focus();
    return;
  }
  const { pairs, problems } = findPairs();
  if (problems.length) {
    showProblem(error, { title: 'Every image needs its partner', detail: problems.join(' ') });
    $('ft-files').focus();
    return;
  }
  if (pairs.length < 2) {
    showProblem(error, {
      title: 'At least two pairs are needed',
      detail: `${pairs.length === 1 ? 'One pair is' : 'No pairs are'} chosen; choose images named STEM.src.png and STEM.dst.png.`,
    });
    $('ft-files').focus();
    return;
  }
  let options;
  try { options = optionFields(); } catch (problem) { showProblem(error, problem); return; }
  if (!hasToken()) {
    showProblem(error, { title: 'Enter the admin token first', detail: 'Fine-tuning jobs are an admin route.' });
    $('token').focus();
    return;
  }
  const form = new FormData();
  form.append('concept', name.value);
  for (const [k, v] of options) form.append(k, v);
  for (const p of pairs) {
    form.append('file', p.src, `${p.stem}.src.${extOf(p.src)}`);
    form.append('file', p.dst, `${p.stem}.dst.${extOf(p.dst)}`);
  }
  const bytes = pairs.reduce((n, p) => n + p.src.size + p.dst.size, 0);
  const button = $('ft-start');
  button.disabled = true;
  $('ft-live').textContent = `Uploading ${pairs.length} pairs (${formatBytes(bytes)})…`;
  try {
    const res = await fetch(apiUrl('v1/finetunes'), { method: 'POST', headers: authHeaders(), body: form });
    if (!res.ok) {
      showProblem(error, await readProblem(res));
      $('ft-live').textContent = 'The job was not started.';
      return;
    }
    const job = await res.json();
    $('ft-live').textContent = `Job for ${job.concept} queued.`;
    await loadJobs();
    watch(job.id, job);
  } catch (err) {
    showProblem(error, networkProblem(err));
    $('ft-live').textContent = 'The job was not started.';
  } finally {
    button.disabled = false;
  }
}

// ---- the list of jobs --------------------------------------------------------

let jobs = [];
let listRequest = 0;

// GET /v1/finetunes.  explicit: the user asked (errors are shown as
// problems); otherwise they are a note under the heading.
async function loadJobs({ explicit = false } = {}) {
  const note = $('ft-jobs-note');
  const mine = ++listRequest;
  if (!hasToken()) {
    stopWatching();
    $('ft-job').hidden = true;
    jobs = [];
    renderJobs();
    note.textContent = 'Enter the admin token to start jobs and see them here.';
    note.hidden = false;
    delete $('ft-jobs').dataset.loaded;
    return;
  }
  let res;
  try {
    res = await fetch(apiUrl('v1/finetunes'), { headers: { ...authHeaders(), Accept: 'application/json' }, cache: 'no-store' });
  } catch (err) {
    if (mine !== listRequest) return;
    if (explicit) showProblem($('ft-error'), networkProblem(err));
    note.textContent = 'The jobs could not be listed: the server could not be reached.';
    note.hidden = false;
    return;
  }
  if (mine !== listRequest) return;
  if (!res.ok) {
    const problem = await readProblem(res);
    if (mine !== listRequest) return;
    if (explicit) showProblem($('ft-error'), problem);
    jobs = [];
    renderJobs();
    note.textContent = `The jobs could not be listed: ${problem.title} (${problem.status}).`;
    note.hidden = false;
    delete $('ft-jobs').dataset.loaded;
    return;
  }
  const body = await res.json();
  if (mine !== listRequest) return;
  jobs = Array.isArray(body.jobs) ? body.jobs : [];
  renderJobs();
  note.textContent = 'No jobs yet.';
  note.hidden = jobs.length > 0;
  $('ft-jobs').dataset.loaded = '1';
  // Coming back to the page while a job runs: follow it.
  if (!current) {
    const active = jobs.find((j) => !FINAL.has(j.state));
    if (active) watch(active.id, active);
  }
}

const timeOf = (t) => (Number.isFinite(t) ? new Date(t * 1000).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' }) : '');

function renderJobs() {
  $('ft-job-list').replaceChildren(...jobs.map((j) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'job-item';
    b.dataset.id = j.id;
    b.setAttribute('aria-pressed', String(current?.id === j.id));
    const concept = document.createElement('span');
    concept.className = 'job-concept';
    concept.textContent = j.concept;
    const state = document.createElement('span');
    state.className = 'badge';
    state.dataset.state = j.state;
    state.textContent = j.state;
    const when = document.createElement('span');
    when.className = 'dim job-when';
    when.textContent = `${timeOf(j.created_at)} · ${j.pairs} pairs`;
    b.append(concept, ' ', state, ' ', when);
    b.addEventListener('click', () => watch(j.id, j));
    li.append(b);
    return li;
  }));
}

// ---- following one job ---------------------------------------------------------

// The job on show: its record, and what its events say.
let current = null;

function newView(id) {
  return {
    id, concept: '', state: '', error: null, total: 0, pairs: 0,
    phase: '', offset: 0, step: 0, l1: null, rate: 0, eta: null, psnr: null, identity: null,
    points: [], phases: [], result: null, lastId: null, final: false, announced: '',
    controller: new AbortController(),
  };
}

// Folds a job record (POST's or GET's answer) into the view.
function applyRecord(v, job) {
  v.concept = job.concept ?? v.concept;
  v.state = job.state ?? v.state;
  v.error = job.error ?? null;
  v.total = Number(job.options?.steps) || v.total;
  v.pairs = job.pairs ?? v.pairs;
  v.result = job.result ?? null;
  const p = job.progress || {};
  if (Number.isFinite(p.step)) v.step = p.step;
  if (p.phase) v.phase = p.phase;
  if (Number.isFinite(p.l1)) v.l1 = p.l1;
  if (Number.isFinite(p.eta_s)) v.eta = p.eta_s;
  if (Number.isFinite(p.psnr)) v.psnr = p.psnr;
  if (Number.isFinite(p.identity_psnr)) v.identity = p.identity_psnr;
}

// Folds one server-sent event into the view.  Steps count within their
// phase; the probe phase starts the job, the training phase ends it.
function applyEvent(v, ev) {
  let d;
  try { d = JSON.parse(ev.data); } catch { return; }
  if (ev.id !== '') v.lastId = ev.id;
  switch (ev.event) {
    case 'state':
      v.state = d.state;
      v.error = d.error ?? null;
      if (FINAL.has(d.state)) v.final = true;
      break;
    case 'phase':
      v.phase = d.phase;
      if (d.phase === 'probe') v.offset = 0;
      if (d.phase === 'train') v.offset = Math.max(0, v.total - (Number(d.steps) || 0));
      if (d.phase === 'probe' || d.phase === 'train') v.phases.push({ phase: d.phase, step: v.offset });
      break;
    case 'step':
      v.step = v.offset + Number(d.step);
      v.l1 = Number(d.l1);
      v.rate = Number(d.steps_per_s) || 0;
      v.eta = v.rate > 0 ? Math.max(0, v.total - v.step) / v.rate : null;
      if (Number.isFinite(v.l1)) v.points.push({ step: v.step, l1: v.l1, phase: v.phase });
      break;
    case 'eval':
      v.psnr = Number(d.psnr);
      v.identity = Number(d.identity_psnr);
      break;
    default:
      break;
  }
}

function formatDuration(s) {
  if (!Number.isFinite(s)) return '—';
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, '0')} min`;
}

const dB = (x) => (Number.isFinite(x) ? `${x.toFixed(2)} dB` : '—');

let chartFrame = 0;

function render(v) {
  if (current !== v) return;
  $('ft-job').hidden = false;
  $('ft-job').dataset.state = v.state;
  $('ft-job-concept').textContent = v.concept;
  $('ft-job-state').textContent = v.state;
  $('ft-job-state').dataset.state = v.state;
  $('ft-job-id').textContent = `${v.id} · ${v.pairs} pairs`;
  const bar = $('ft-progress');
  const total = v.total || 1;
  const step = v.state === 'succeeded' ? total : Math.min(v.step, total);
  bar.max = total;
  bar.value = step;
  $('ft-progress-text').value = v.total ? `${step} / ${v.total} steps (${Math.floor((100 * step) / total)}%)` : '—';
  $('ft-phase').textContent = v.phase || (v.state === 'queued' ? 'waiting' : '—');
  $('ft-step').textContent = v.total ? `${step} / ${v.total}` : '—';
  $('ft-eta').textContent = FINAL.has(v.state) ? '—' : formatDuration(v.eta);
  $('ft-l1').textContent = Number.isFinite(v.l1) ? v.l1.toFixed(4) : '—';
  $('ft-psnr').textContent = Number.isFinite(v.psnr) ? `${dB(v.psnr)} (identity ${dB(v.identity)})` : '—';

  const active = !FINAL.has(v.state);
  const cancel = $('ft-cancel');
  if (cancel.dataset.armed !== '1') {
    cancel.textContent = active ? 'Cancel job' : 'Remove job';
    cancel.setAttribute('aria-label', `${active ? 'Cancel the job' : 'Remove the job'} for ${v.concept}`);
  }
  const jobError = $('ft-job-error');
  if (v.state === 'failed' || (v.error && v.state !== 'succeeded')) {
    showProblem(jobError, { title: `The job ${v.state === 'failed' ? 'failed' : 'stopped'}`, detail: v.error || '' });
  } else if (jobError.dataset.stream !== '1') {
    clearProblem(jobError);
  }
  renderResult(v);
  announce(v, step, total);
  if (!chartFrame) {
    chartFrame = requestAnimationFrame(() => {
      chartFrame = 0;
      if (current) drawLossChart($('ft-chart'), current.points, current.total, current.phases);
    });
  }
  for (const b of $('ft-job-list').querySelectorAll('button.job-item')) {
    b.setAttribute('aria-pressed', String(b.dataset.id === v.id));
    if (b.dataset.id === v.id) {
      const badge = b.querySelector('.badge');
      badge.textContent = badge.dataset.state = v.state;
    }
  }
}

// The live region says the state, the phase and each quarter of the steps
// (not every step).
function announce(v, step, total) {
  const quarter = Math.floor((4 * step) / total);
  const key = `${v.state}|${v.phase}|${quarter}`;
  if (key === v.announced) return;
  v.announced = key;
  let text = `Job ${v.concept}: ${v.state}`;
  if (v.state === 'running') text += `, ${v.phase || 'starting'}, ${Math.floor((100 * step) / total)}% done`;
  if (v.state === 'succeeded') text += '. The concept is ready to try';
  $('ft-live').textContent = `${text}.`;
}

function renderResult(v) {
  const dl = $('ft-result');
  const r = v.result;
  $('ft-try').hidden = v.state !== 'succeeded';
  if (!r || v.state !== 'succeeded') {
    dl.hidden = true;
    return;
  }
  const rows = [
    ['PSNR', dB(r.psnr)],
    ['identity PSNR', dB(r.identity_psnr)],
    ['SSIM', Number.isFinite(r.ssim) ? r.ssim.toFixed(3) : '—'],
    ['adapter', Number.isFinite(r.adapter_bytes) ? formatBytes(r.adapter_bytes) : '—'],
    ['wall time', formatDuration(r.wall_s)],
  ];
  if (r.ranks && typeof r.ranks === 'object') {
    const ranks = Object.values(r.ranks);
    if (ranks.length) rows.push(['ranks', `${Math.min(...ranks)}–${Math.max(...ranks)} over ${ranks.length} layers`]);
  }
  fillDefinitions(dl, rows);
  dl.hidden = false;
}

function stopWatching() {
  if (!current) return;
  current.controller.abort();
  current = null;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// Shows job id (record: what is known of it already) and follows its events.
async function watch(id, record) {
  if (current?.id === id) return;
  stopWatching();
  const v = newView(id);
  current = v;
  clearProblem($('ft-job-error'));
  delete $('ft-job-error').dataset.stream;
  const cancel = $('ft-cancel');
  delete cancel.dataset.armed;
  cancel.disabled = false;
  if (record) applyRecord(v, record);
  render(v);
  drawLossChart($('ft-chart'), [], v.total);
  const fresh = await getJob(v);
  if (current !== v) return;
  if (fresh) { applyRecord(v, fresh); render(v); }
  await follow(v);
}

// GET /v1/finetunes/{id}; null (and the problem shown) when it failed.
async function getJob(v) {
  try {
    const res = await fetch(apiUrl(`v1/finetunes/${encodeURIComponent(v.id)}`),
      { headers: { ...authHeaders(), Accept: 'application/json' }, cache: 'no-store', signal: v.controller.signal });
    if (res.ok) return await res.json();
    if (current === v) showProblem($('ft-job-error'), await readProblem(res));
  } catch (err) {
    if (current === v && !v.controller.signal.aborted) showProblem($('ft-job-error'), networkProblem(err));
  }
  return null;
}

// Reads the job's event stream until its final state; reconnects (from
// the last event, Last-Event-ID) when the stream breaks off before it.
async function follow(v) {
  let failures = 0;
  // The stream replays every event from the first: the view starts over.
  v.points = [];
  v.phases = [];
  v.offset = 0;
  while (current === v && !v.final) {
    const headers = { ...authHeaders(), Accept: 'text/event-stream' };
    if (v.lastId !== null) headers['Last-Event-ID'] = v.lastId;
    try {
      const res = await fetch(apiUrl(`v1/finetunes/${encodeURIComponent(v.id)}/events`),
        { headers, cache: 'no-store', signal: v.controller.signal });
      if (!res.ok) {
        const problem = await readProblem(res);
        if (current !== v) return;
        $('ft-job-error').dataset.stream = '1';
        showProblem($('ft-job-error'), problem);
        if (res.status !== 503) return; // 401, 404: waiting will not help
      } else {
        await readEventStream(res, (ev) => {
          if (current !== v) return;
          const was = v.state;
          applyEvent(v, ev);
          render(v);
          if (FINAL.has(v.state) && !FINAL.has(was)) finished(v);
        }, v.controller.signal);
        failures = 0;
        if (current === v && $('ft-job-error').dataset.stream === '1') {
          delete $('ft-job-error').dataset.stream;
          render(v);
        }
      }
    } catch (err) {
      if (v.controller.signal.aborted) return;
      failures++;
    }
    if (current !== v || v.final) return;
    await sleep(Math.min(15000, 1000 * 2 ** failures), v.controller.signal);
  }
}

// The job reached its final state: its result, the concepts, the list.
async function finished(v) {
  const record = await getJob(v);
  if (record) applyRecord(v, record);
  if (v.state === 'succeeded') await hooks.reloadConcepts();
  render(v);
  if (current === v) $('ft-job').dataset.done = '1';
  loadJobs();
}

// DELETE: cancels an active job (202) or removes a finished one (204).
// The first click arms the button, the second (within a few seconds) acts.
async function onCancel() {
  const v = current;
  if (!v) return;
  const b = $('ft-cancel');
  const active = !FINAL.has(v.state);
  if (b.dataset.armed !== '1') {
    b.dataset.armed = '1';
    b.textContent = active ? 'Confirm cancel' : 'Confirm remove';
    b.setAttribute('aria-label', `Confirm: ${active ? 'cancel' : 'remove'} the job for ${v.concept}`);
    setTimeout(() => {
      if (b.dataset.armed !== '1') return;
      delete b.dataset.armed;
      if (current === v) render(v);
    }, 4000);
    return;
  }
  delete b.dataset.armed;
  b.disabled = true;
  clearProblem($('ft-error'));
  try {
    const res = await fetch(apiUrl(`v1/finetunes/${encodeURIComponent(v.id)}`), { method: 'DELETE', headers: authHeaders() });
    if (!res.ok) {
      showProblem($('ft-error'), await readProblem(res));
    } else if (res.status === 204) {
      $('ft-live').textContent = `Removed the job for ${v.concept}.`;
      stopWatching();
      $('ft-job').hidden = true;
      await loadJobs();
    } else {
      $('ft-live').textContent = `Cancelling the job for ${v.concept}…`;
      // The event stream brings the "cancelled" state.
    }
  } catch (err) {
    showProblem($('ft-error'), networkProblem(err));
  } finally {
    b.disabled = false;
    if (current === v) render(v);
  }
}

async function onTry() {
  const v = current;
  if (!v) return;
  if (!(await hooks.tryConcept(v.concept))) {
    showProblem($('ft-job-error'), { title: `${v.concept} is not a concept now`, detail: 'It may have been deleted; see the concept list.' });
  }
}

// ---- set-up ------------------------------------------------------------------------

let tokenTimer = 0;

// The admin token changed: list the jobs again (after typing stops).
export function onTokenChange() {
  clearTimeout(tokenTimer);
  tokenTimer = setTimeout(() => loadJobs(), 400);
}

// reloadConcepts(): refreshes the concept lists; tryConcept(name): selects
// a concept in the edit form (false when it is not there).
export function setupFinetune(h) {
  hooks = { ...hooks, ...h };
  setupPairPickers();
  $('ft-form').addEventListener('submit', onStart);
  $('ft-refresh').addEventListener('click', () => { clearProblem($('ft-error')); loadJobs({ explicit: true }); });
  $('ft-cancel').addEventListener('click', onCancel);
  $('ft-try').addEventListener('click', onTry);
  drawLossChart($('ft-chart'), [], 0);
  loadJobs();
}
