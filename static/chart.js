// The live loss chart of a fine-tuning job: an inline <svg> drawn by hand
// (no chart library).  Points are {step, l1, phase}; each phase (probe,
// train) is its own line, since the training phase starts afresh.
const SVG = 'http://www.w3.org/2000/svg';
const W = 480, H = 200;
const M = { left: 46, right: 12, top: 12, bottom: 26 };
const MAX_DRAWN = 600; // points per line; longer runs are thinned for drawing

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Three significant digits, without a trailing ".0".
const short = (x) => (Math.abs(x) >= 100 ? x.toFixed(0) : String(Number(x.toPrecision(3))));

// Draws points into svg (which keeps its <title> and <desc>); total is the
// job's step count (the x axis), 0 when unknown; phases [{phase, step}]
// mark where the phases after the first start.
export function drawLossChart(svg, points, total, phases = []) {
  for (const child of [...svg.children]) {
    if (child.tagName !== 'title' && child.tagName !== 'desc') child.remove();
  }
  svg.dataset.points = String(points.length);
  const desc = svg.querySelector('desc');
  if (points.length === 0) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No steps yet'));
    if (desc) desc.textContent = 'No steps yet.';
    return;
  }
  const last = points[points.length - 1];
  const maxStep = Math.max(total || 0, ...points.map((p) => p.step), 1);
  let lo = Math.min(...points.map((p) => p.l1));
  let hi = Math.max(...points.map((p) => p.l1));
  if (!(hi > lo)) { const pad = Math.abs(hi) * 0.05 || 0.01; lo -= pad; hi += pad; }
  const pad = (hi - lo) * 0.08;
  lo = Math.max(0, lo - pad);
  hi += pad;
  const x = (s) => M.left + (s / maxStep) * (W - M.left - M.right);
  const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * (H - M.top - M.bottom);

  // Axes: three loss levels, the first and last step.
  const axes = el('g', { class: 'chart-axes' });
  for (const v of [lo, (lo + hi) / 2, hi]) {
    axes.append(el('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: 'chart-grid' }));
    axes.append(el('text', { x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, short(v)));
  }
  axes.append(el('text', { x: M.left, y: H - 8, 'text-anchor': 'start' }, '0'));
  axes.append(el('text', { x: W - M.right, y: H - 8, 'text-anchor': 'end' }, `${maxStep} steps`));
  svg.append(axes);

  // A marker where each later phase starts; one line per run of points of
  // the same phase.
  for (const { phase, step } of phases) {
    if (!(step > 0) || step > maxStep) continue;
    const x0 = x(step);
    svg.append(el('line', { x1: x0, x2: x0, y1: M.top, y2: H - M.bottom, class: 'chart-phase' }));
    svg.append(el('text', { x: x0 + 4, y: M.top + 10, class: 'chart-phase-label' }, phase));
  }
  const runs = [];
  for (const p of points) {
    const run = runs[runs.length - 1];
    if (run && run.phase === p.phase && p.step >= run.points[run.points.length - 1].step) run.points.push(p);
    else runs.push({ phase: p.phase, points: [p] });
  }
  for (const run of runs) {
    const every = Math.ceil(run.points.length / MAX_DRAWN);
    const drawn = run.points.filter((p, i) => i % every === 0 || i === run.points.length - 1);
    const cls = `chart-line chart-${run.phase === 'probe' ? 'probe' : 'train'}`;
    svg.append(el('polyline', { points: drawn.map((p) => `${x(p.step).toFixed(1)},${y(p.l1).toFixed(1)}`).join(' '), class: cls }));
  }
  svg.append(el('circle', { cx: x(last.step), cy: y(last.l1), r: 3.5, class: 'chart-last' }));
  if (desc) {
    desc.textContent = `${points.length} points; L1 loss ${short(last.l1)} at step ${last.step} of ${maxStep}` +
      ` (range ${short(Math.min(...points.map((p) => p.l1)))}–${short(Math.max(...points.map((p) => p.l1)))}).`;
  }
}
