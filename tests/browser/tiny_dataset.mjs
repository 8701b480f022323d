#!/usr/bin/env node
// Writes the smallest dataset `e2gan finetune` accepts (one 16×16 pair of
// concept "sepia" in train and val, manifest.json as tools/make_dataset.py
// lays it out) into DIR, so that run.sh can make a real adapter for the
// page's upload/delete round trip in a fraction of a second.
//   node tiny_dataset.mjs DIR
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const CROP = 16;

// An 8-bit RGB PNG of size w×h whose pixel (x, y) is rgb(x, y).
function png(w, h, rgb) {
  const raw = Buffer.alloc((w * 3 + 1) * h); // each row: filter byte 0, then RGB
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) raw.set(rgb(x, y), y * (w * 3 + 1) + 1 + x * 3);
  }
  const chunk = (type, data) => {
    const b = Buffer.alloc(12 + data.length);
    b.writeUInt32BE(data.length, 0);
    b.write(type, 4, 'latin1');
    data.copy(b, 8);
    b.writeUInt32BE(zlib.crc32(b.subarray(4, 8 + data.length)), 8 + data.length);
    return b;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

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
