// ort_bench.mjs — the onnxruntime-node (CPU) peer of `e2gan bench`: times an
// ONNX model written by bench/export_onnx.py on random input.  Its last stdout
// line is JSON {"ms_per_batch": …, "images_per_s": …}, as e2gan bench prints.
// With --check DIR it instead runs DIR/x.f32 and compares with DIR/y.f32
// (PyTorch's output), failing when they differ by more than 1e-4.
//
// usage: node bench/ort_bench.mjs --model M.onnx --size S [--batch B]
//        [--iters N] [--warmup W] [--threads T] [--check DIR]
// install: npm install --prefix bench --ignore-scripts onnxruntime-node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

const { values: opt } = parseArgs({
  options: {
    model: { type: 'string' }, size: { type: 'string' }, batch: { type: 'string', default: '1' },
    iters: { type: 'string', default: '10' }, warmup: { type: 'string', default: '2' },
    threads: { type: 'string', default: '2' }, check: { type: 'string' },
  },
});
if (!opt.model || !opt.size) {
  console.error('usage: node ort_bench.mjs --model M.onnx --size S [--batch B] [--iters N] [--warmup W] [--threads T] [--check DIR]');
  process.exit(2);
}
const size = Number(opt.size), batch = Number(opt.batch);
const session = await ort.InferenceSession.create(opt.model, {
  intraOpNumThreads: Number(opt.threads), interOpNumThreads: 1,
  executionMode: 'sequential', graphOptimizationLevel: 'all',
});

function readF32(path) {
  const b = readFileSync(path);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

if (opt.check) {
  const x = readF32(`${opt.check}/x.f32`), want = readF32(`${opt.check}/y.f32`);
  const { y } = await session.run({ x: new ort.Tensor('float32', x, [1, 3, size, size]) });
  let maxDiff = 0;
  for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(y.data[i] - want[i]));
  console.log(JSON.stringify({ max_abs_diff_vs_torch: maxDiff }));
  process.exit(maxDiff <= 1e-4 ? 0 : 1);
}

const x = new Float32Array(batch * 3 * size * size).map(() => Math.random() * 2 - 1);
const feeds = { x: new ort.Tensor('float32', x, [batch, 3, size, size]) };
const warmup = Number(opt.warmup), iters = Number(opt.iters), times = [];
for (let i = 0; i < warmup + iters; i++) {
  const t0 = performance.now();
  await session.run(feeds);
  if (i >= warmup) times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const mid = times.length >> 1;
const ms = times.length % 2 ? times[mid] : (times[mid - 1] + times[mid]) / 2;
console.log(JSON.stringify({ ms_per_batch: +ms.toFixed(3), images_per_s: +(batch * 1e3 / ms).toFixed(3) }));
