#!/usr/bin/env node
// Drives the web page (static/) of a running e2gan-server in Debian's
// chromium: edits tests/data/chelsea.png through the page and checks what
// the page shows, then the error paths.  Prints one line a check and
// "N passed, M failed"; exits 1 on any failure, 2 on bad usage.
//
//   node edit_page.mjs --url http://127.0.0.1:PORT/ [--screenshot out.png]
//        [--error-screenshot err.png] [--token ADMIN_TOKEN [--adapter A.safetensors]]
//        [--width 1280] [--timeout 60000] [--chromium /usr/bin/chromium]
//
// --token: the server's admin token; with it the upload of a non-adapter is
// expected to reach validation (422), without it to be refused (401 or 403).
// --adapter: an adapter for the server's base; it is uploaded through the
// page, used for an edit and deleted again.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import {
  check, expect, runBrowser, textOf, shown, imageSize, unlabelledControls, checkLayoutAndErrors,
  INPUT, INPUT_W, INPUT_H,
} from './harness.mjs';


let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: 'string' },
      screenshot: { type: 'string' },
      'error-screenshot': { type: 'string' },
      token: { type: 'string' },
      adapter: { type: 'string' },
      width: { type: 'string', default: '1280' },
      timeout: { type: 'string', default: '60000' },
      chromium: { type: 'string', default: '/usr/bin/chromium' },
    },
  }));
  if (!opts.url) throw new Error('--url is required');
  if (opts.adapter && !opts.token) throw new Error('--adapter needs --token');
} catch (err) {
  console.error(`edit_page.mjs: ${err.message}`);
  console.error('usage: node edit_page.mjs --url http://127.0.0.1:PORT/ [--screenshot FILE] [--token T]');
  process.exit(2);
}
const timeout = Number(opts.timeout);

// ---- in-page helpers ----------------------------------------------------

// Pixels of the before and after images, drawn into canvases in the page.
function comparePixels() {
  const pixels = (img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, c.width, c.height).data;
  };
  const a = pixels(document.getElementById('before'));
  const b = pixels(document.getElementById('after'));
  if (a.length !== b.length) return { sameSize: false };
  let sum = 0, changed = 0;
  const colours = new Set();
  for (let i = 0; i < a.length; i += 4) {
    const d = Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]);
    sum += d;
    if (d > 12) changed++;
    if (colours.size < 1000) colours.add((b[i] >> 3) << 10 | (b[i + 1] >> 3) << 5 | b[i + 2] >> 3);
  }
  const n = a.length / 4;
  return { sameSize: true, meanAbs: sum / (3 * n), changedFraction: changed / n, colours: colours.size };
}

// The problem+json a request of the page got, asked for again outside the
// browser (Chromium may evict a response body from its inspector cache
// before it can be read back, so the page's own copy is not used).
async function replay(res, body) {
  const req = res.request();
  const sent = await req.allHeaders();
  const headers = Object.fromEntries(['content-type', 'authorization'].filter((h) => sent[h]).map((h) => [h, sent[h]]));
  const again = await req.frame().page().request.fetch(req.url(), { method: req.method(), headers, data: body });
  const type = again.headers()['content-type'] || '';
  await expect(again.status() === res.status() && type.startsWith('application/problem+json'),
    `replayed: ${again.status()} ${type}`);
  return again.json();
}

// ---- the test -----------------------------------------------------------

await runBrowser({ chromiumPath: opts.chromium, width: Number(opts.width), timeout, name: 'browser test' }, async (page, pageErrors) => {
  const editResponse = () => page.waitForResponse((r) => new URL(r.url()).pathname.endsWith('/v1/edits'));
  let concept = '';

  await check('page loads and lists the concepts from GET /v1/concepts', async () => {
    const res = await page.goto(opts.url, { waitUntil: 'load' });
    await expect(res && res.ok(), `GET ${opts.url} answered ${res && res.status()}`);
    await expect((await page.title()).includes('e2gan'), 'unexpected page title');
    await page.waitForSelector('body[data-concepts="loaded"]');
    const names = await page.$$eval('#concept option', (os) => os.map((o) => o.value).filter(Boolean));
    const api = await (await page.request.get(new URL('v1/concepts', opts.url).href)).json();
    const apiNames = api.concepts.map((c) => c.name);
    await expect(names.length > 0, 'the concept list is empty');
    await expect(JSON.stringify(names) === JSON.stringify(apiNames), `page lists ${names}, the API ${apiNames}`);
    concept = names[0];
  }, { fatal: true });

  await check('every form control has a label; the first Tab reaches the image input', async () => {
    const bad = await page.evaluate(unlabelledControls);
    await expect(bad.length === 0, `unlabelled: ${bad.join(', ')}`);
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    await expect(focused === 'image', `first Tab focused "${focused}"`);
  });

  await check('uploading chelsea.png through the file input shows it as "before"', async () => {
    await page.setInputFiles('#image', INPUT);
    await shown(page, 'before');
    const [w, h] = await imageSize(page, '#before');
    await expect(w === INPUT_W && h === INPUT_H, `before is ${w}×${h}`);
    await expect(await page.isEnabled('#edit-button'), 'the Edit button stays disabled');
  }, { fatal: true });

  await check(`editing with the first concept shows a ${INPUT_W}×${INPUT_H} result`, async () => {
    await page.selectOption('#concept', concept);
    const [res] = await Promise.all([editResponse(), page.click('#edit-button')]);
    const q = new URL(res.url()).searchParams;
    await expect(res.status() === 200, async () => `POST /v1/edits answered ${res.status()}: ${await res.text()}`);
    await expect(q.get('concept') === concept && q.get('strength') === '1' && q.get('format') === 'png',
      `request query was ${q}`);
    await expect(res.headers()['content-type'] === 'image/png', `result type ${res.headers()['content-type']}`);
    await shown(page, 'after');
    const [w, h] = await imageSize(page, '#after');
    await expect(w === INPUT_W && h === INPUT_H, `after is ${w}×${h}`);
    await expect((await textOf(page, '#after-size')).includes(`${INPUT_W}×${INPUT_H}`), 'size caption missing');
  }, { fatal: true });

  await check('the result differs from the input (pixels compared in canvases)', async () => {
    const s = await page.evaluate(comparePixels);
    await expect(s.sameSize, 'before and after differ in size');
    await expect(s.meanAbs > 2 && s.changedFraction > 0.05,
      `too close to the input: mean |Δ| ${s.meanAbs.toFixed(2)}, ${(100 * s.changedFraction).toFixed(1)}% changed`);
    await expect(s.colours > 16, `the result is nearly uniform (${s.colours} colours)`);
    console.log(`     mean |Δ| ${s.meanAbs.toFixed(1)}/255, ${(100 * s.changedFraction).toFixed(0)}% of pixels changed`);
  });

  await check('the timing headers are shown (Server-Timing, X-E2gan-Batch-Size, X-Request-Id)', async () => {
    await page.waitForSelector('#timings:not([hidden])');
    const rows = await page.$$eval('#timings dt', (dts) =>
      Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
    for (const stage of ['decode', 'queue', 'compute', 'encode', 'total']) {
      await expect(/ms$/.test(rows[stage] || ''), `no "${stage}" timing in ${JSON.stringify(rows)}`);
    }
    await expect(/^\d+$/.test(rows['batch size'] || ''), `no batch size in ${JSON.stringify(rows)}`);
    await expect(rows['request id'], `no request id in ${JSON.stringify(rows)}`);
    await expect(rows.concept === concept, `concept header shown as "${rows.concept}"`);
  });

  await check('the download link saves the result', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const name = download.suggestedFilename();
    await expect(name === `chelsea-${concept}.png`, `suggested name ${name}`);
    const saved = fs.readFileSync(await download.path());
    const onPage = Buffer.from(await page.evaluate(async () => {
      const buf = await (await fetch(document.getElementById('after').src)).arrayBuffer();
      return [...new Uint8Array(buf)];
    }));
    await expect(saved.length > 0 && saved.equals(onPage), `saved ${saved.length} bytes, the page shows ${onPage.length}`);
  });

  await check('a blend of two concepts at strength 0.5 as JPEG sends "a:0.7,b:0.3"', async () => {
    const names = await page.$$eval('#concept option', (os) => os.map((o) => o.value));
    await expect(names.length >= 2, 'needs two concepts');
    await page.check('#blend');
    await page.selectOption('#concept2', names[1]);
    await page.$eval('#strength', (el) => { el.value = '0.5'; el.dispatchEvent(new Event('input', { bubbles: true })); });
    await page.selectOption('#format', 'jpeg');
    const spec = `${names[0]}:0.7,${names[1]}:0.3`;
    const specText = await textOf(page, '#spec');
    await expect(specText.includes(`concept=${spec}`), `spec shown: ${specText}`);
    const [res] = await Promise.all([editResponse(), page.click('#edit-button')]);
    const q = new URL(res.url()).searchParams;
    await expect(res.status() === 200, async () => `answered ${res.status()}: ${await res.text()}`);
    await expect(q.get('concept') === spec && q.get('strength') === '0.5' && q.get('format') === 'jpeg', `query ${q}`);
    await expect(res.headers()['content-type'] === 'image/jpeg', `type ${res.headers()['content-type']}`);
    await shown(page, 'after');
    const [w, h] = await imageSize(page, '#after');
    await expect(w === INPUT_W && h === INPUT_H, `after is ${w}×${h}`);
  });

  await check('WebP at quality 80 sends format=webp&quality=80 and shows an image/webp result', async () => {
    await page.selectOption('#format', 'webp');
    await page.fill('#quality', '80');
    const [res] = await Promise.all([editResponse(), page.click('#edit-button')]);
    const q = new URL(res.url()).searchParams;
    await expect(res.status() === 200, async () => `answered ${res.status()}: ${await res.text()}`);
    await expect(q.get('format') === 'webp' && q.get('quality') === '80', `query ${q}`);
    await expect(res.headers()['content-type'] === 'image/webp', `type ${res.headers()['content-type']}`);
    await shown(page, 'after');
    const [w, h] = await imageSize(page, '#after');
    await expect(w === INPUT_W && h === INPUT_H, `after is ${w}×${h}`);
    await expect((await page.getAttribute('#download', 'download')).endsWith('.webp'), 'download name');
    await page.fill('#quality', '');
  });

  if (opts.screenshot) {
    await check(`screenshot to ${opts.screenshot}`, async () => {
      await page.screenshot({ path: opts.screenshot, fullPage: true });
    });
  }

  await check('an unknown concept shows the problem title and detail (422)', async () => {
    await page.uncheck('#blend');
    await page.selectOption('#format', 'png');
    await page.$eval('#concept', (sel) => {
      const o = document.createElement('option');
      o.value = o.textContent = 'no-such-concept';
      sel.append(o);
      sel.value = 'no-such-concept';
      sel.dispatchEvent(new Event('change', { bubbles: true }));
    });
    const [res] = await Promise.all([editResponse(), page.click('#edit-button')]);
    await expect(res.status() === 422, `answered ${res.status()}`);
    await expect(res.headers()['content-type'].startsWith('application/problem+json'), `type ${res.headers()['content-type']}`);
    const problem = await replay(res, fs.readFileSync(INPUT));
    await page.waitForSelector('#edit-error:not([hidden])');
    const title = await textOf(page, '#edit-error .problem-title');
    const detail = await textOf(page, '#edit-error .problem-detail');
    await expect(title === `${problem.title} (422)`, `title shown "${title}", problem says "${problem.title}"`);
    await expect(detail === problem.detail && detail.length > 0, `detail shown "${detail}"`);
    await expect(await page.isHidden('#after'), 'a stale result is still shown');
    await page.$eval('#concept option[value="no-such-concept"]', (o) => o.remove());
  });

  await check('a non-image file shows the problem title and detail (415)', async () => {
    await page.selectOption('#concept', concept);
    await page.setInputFiles('#image', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image\n') });
    await page.waitForSelector('#edit-error', { state: 'hidden' });
    const [res] = await Promise.all([editResponse(), page.click('#edit-button')]);
    await expect(res.status() === 415, `answered ${res.status()}`);
    const problem = await replay(res, Buffer.from('not an image\n'));
    await page.waitForSelector('#edit-error:not([hidden])');
    const title = await textOf(page, '#edit-error .problem-title');
    const detail = await textOf(page, '#edit-error .problem-detail');
    await expect(title === `${problem.title} (415)` && detail === problem.detail && detail.length > 0,
      `shown "${title}" / "${detail}"`);
    await expect((await textOf(page, '#before-size')).includes('no preview'), 'no "(no preview)" note');
  });

  if (opts['error-screenshot']) {
    await check(`error screenshot to ${opts['error-screenshot']}`, async () => {
      await page.screenshot({ path: opts['error-screenshot'], fullPage: true });
    });
  }

  await check('dropping an image on the drop zone selects it', async () => {
    const data = fs.readFileSync(INPUT).toString('base64');
    const transfer = await page.evaluateHandle((b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
      return dt;
    }, data);
    await page.dispatchEvent('#drop', 'dragenter', { dataTransfer: transfer });
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: transfer });
    await shown(page, 'before');
    const [w, h] = await imageSize(page, '#before');
    await expect(w === INPUT_W && h === INPUT_H, `before is ${w}×${h}`);
    await expect((await textOf(page, '#drop-hint')).includes('dropped.png'), 'the dropped file is not named');
    await expect(await page.isHidden('#edit-error'), 'the previous error is still shown');
  });

  await check(`uploading a non-adapter file as an admin shows the problem (${opts.token ? '401, then 422' : '401/403'})`, async () => {
    await page.fill('#adapter-name', 'not-an-adapter');
    await page.setInputFiles('#adapter-file', { name: 'junk.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.alloc(64, 7) });
    const put = () => page.waitForResponse((r) => r.request().method() === 'PUT');
    await page.fill('#token', opts.token ? 'wrong-token' : '');
    let [res] = await Promise.all([put(), page.click('#upload-button')]);
    await expect(opts.token ? res.status() === 401 : [401, 403].includes(res.status()), `answered ${res.status()}`);
    await page.waitForSelector('#admin-error:not([hidden])');
    const title = await textOf(page, '#admin-error .problem-title');
    await expect(title.endsWith(`(${res.status()})`), `title shown "${title}"`);
    if (opts.token) {
      await page.fill('#token', opts.token);
      [res] = await Promise.all([put(), page.click('#upload-button')]);
      await expect(res.status() === 422, `with the token it answered ${res.status()}`);
      const problem = await replay(res, Buffer.alloc(64, 7));
      await page.waitForFunction((t) => document.querySelector('#admin-error .problem-title')?.textContent === t,
        `${problem.title} (422)`);
      await expect((await textOf(page, '#admin-error .problem-detail')) === problem.detail, 'detail not shown');
    }
  });

  if (opts.adapter) {
    const name = 'browser-test-adapter';
    const row = `#concept-table button[data-name="${name}"]`;
    await check('an adapter uploaded through the page is listed (201)', async () => {
      await page.fill('#token', opts.token);
      await page.fill('#adapter-name', name);
      await page.setInputFiles('#adapter-file', opts.adapter);
      const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'PUT'), page.click('#upload-button')]);
      await expect(res.status() === 201, `answered ${res.status()}`);
      await page.waitForSelector(`#concept option[value="${name}"]`, { state: 'attached' });
      await page.waitForSelector(row);
      await expect((await textOf(page, '#admin-status')).includes(name), 'no upload message');
      await expect(await page.isHidden('#admin-error'), 'an error is still shown');
    }, { fatal: true });

    await check('an edit with the uploaded adapter shows its result', async () => {
      await page.selectOption('#concept', name);
      const [res] = await Promise.all([editResponse(), page.click('#edit-button')]);
      await expect(res.status() === 200, `answered ${res.status()}`);
      await expect(res.headers()['x-e2gan-concept'] === name, `X-E2gan-Concept: ${res.headers()['x-e2gan-concept']}`);
      await shown(page, 'after');
      const [w, h] = await imageSize(page, '#after');
      await expect(w === INPUT_W && h === INPUT_H, `after is ${w}×${h}`);
    });

    await check('deleting the adapter (two clicks) removes it (204)', async () => {
      await page.click(row);
      await expect((await textOf(page, row)) === 'Confirm delete', 'the first click did not ask for confirmation');
      const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'DELETE'), page.click(row)]);
      await expect(res.status() === 204, `answered ${res.status()}`);
      await page.waitForSelector(row, { state: 'detached' });
      await page.waitForSelector(`#concept option[value="${name}"]`, { state: 'detached' });
      await expect((await textOf(page, '#admin-status')).includes(`Deleted concept ${name}`), 'no delete message');
    });
  }

  await check('the admin token lives in sessionStorage and survives a reload', async () => {
    await page.fill('#token', 'token-kept-for-this-tab');
    const local = await page.evaluate(() => localStorage.length);
    await expect(local === 0, 'something was written to localStorage');
    await page.reload();
    await page.waitForSelector('body[data-concepts="loaded"]');
    await expect((await page.inputValue('#token')) === 'token-kept-for-this-tab', 'token lost on reload');
  });

  await checkLayoutAndErrors(page, pageErrors);
});
