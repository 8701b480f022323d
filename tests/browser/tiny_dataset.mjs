#!/usr/bin/env node
// Writes the smallest dataset `e2gan finetune` accepts (one 16×16 pair of
// concept "sepia" in train and val, manifest.json as tools/make_dataset.py
// lays it out) into DIR, so that run.sh can make a real adapter for the
// page's upload/delete round trip in a fraction of a second.
//   node tiny_dataset.mjs DIR
import fs from 'node:fs';
import path from 'node:path';
import { png } from './png.mjs';

const CROP = 16;

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node tiny_dataset.mjs DIR');
  process.exit(2);
}
const images = {
  src: (x, y) => [x * 16, y * 16, 128],
  sepia: (x, y) => [112 + x * 4, 90 + y * 4, 60],
};
for (const split of ['train', 'val']) {
  for (const [folder, rgb] of Object.entries(images)) {
    fs.mkdirSync(path.join(dir, split, folder), { recursive: true });
    fs.writeFileSync(path.join(dir, split, folder, 'a.png'), png(CROP, CROP, rgb));
  }
}
fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({
  format: 'e2gan-dataset',
  version: 1,
  crop: CROP,
  concepts: [{ name: 'sepia' }],
  splits: { train: { ids: ['a'] }, val: { ids: ['a'] } },
}, null, 2));
