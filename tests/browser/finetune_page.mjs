#!/usr/bin/env node
// Drives the fine-tuning part of the web page (static/finetune.js) of a
// running e2gan-server (with an admin token, a jobs folder and the e2gan
// trainer beside it) in Debian's chromium: chooses three tiny pairs (two
// named STEM.src/STEM.dst, one through the sources and targets pickers),
// starts a short real job, follows it to "succeeded" (progress bar, loss
// chart, PSNR), tries the new concept in the edit form; refuses a lone
// image and a bad name before sending; shows a 409; cancels and removes a
// second job.  Prints one line a check and "N passed, M failed"; exits 1 on
// any failure, 2 on bad usage.
//
//   node finetune_page.mjs --url http://127.0.0.1:PORT/ --token ADMIN_TOKEN
//        [--screenshot out.png] [--width 1280] [--timeout 60000] [--chromium /usr/bin/chromium]
import { parseArgs } from 'node:util';
import {
  check, expect, runBrowser, textOf, shown, imageSize, unlabelledControls, checkLayoutAndErrors,
  INPUT, INPUT_W, INPUT_H,
} from './harness.mjs';
import { png } from './png.mjs';

const CONCEPT = 'browser-ft';
const STEPS = 60;

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: 'string' },
      token: { type: 'string' },
      screenshot: { type: 'string' },
      width: { type: 'string', default: '1280' },
      timeout: { type: 'string', default: '60000' },
      chromium: { type: 'string', default: '/usr/bin/chromium' },
    },
  }));
  if (!opts.url || !opts.token) throw new Error('--url and --token are required');
} catch (err) {
  console.error(`finetune_page.mjs: ${err.message}`);
  console.error('usage: node finetune_page.mjs --url http://127.0.0.1:PORT/ --token T [--screenshot FILE]');
  process.exit(2);
}
const timeout = Number(opts.timeout);

// Pair k: a 48×40 colour pattern and its colour inversion.
function pair(k) {
  const src = (x, y) => [(x * 5 + k * 40) & 255, (y * 6 + k * 20) & 255, (x * y + 30 * k) & 255];
  const dst = (x, y) => src(x, y).map((v) => 255 - v);
  return [png(48, 40, src), png(48, 40, dst)];
}
const file = (name, buffer) => ({ name, mimeType: 'image/png', buffer });
const [p0, p1, p2] = [0, 1, 2].map(pair);

const isJobs = (r, method) => r.request().method() === method && /\/v1\/finetunes(\/[^/]*)?$/.test(new URL(r.url()).pathname);

await runBrowser({ chromiumPath: opts.chromium, width: Number(opts.width), timeout, name: 'fine-tuning browser test' }, async (page, pageErrors) => {
  const jobRequests = [];
  page.on('request', (r) => { if (new URL(r.url()).pathname.includes('/v1/finetunes')) jobRequests.push(`${r.method()} ${r.url()}`); });
  let jobId = '';

  await check('without a token the jobs panel asks for one and the page sends no job request', async () => {
    const res = await page.goto(opts.url, { waitUntil: 'load' });
    await expect(res && res.ok(), `GET ${opts.url} answered ${res && res.status()}`);
    await page.waitForSelector('body[data-concepts="loaded"]');
    await expect((await textOf(page, '#ft-jobs-note')).includes('admin token'), 'no hint about the token');
    await expect(jobRequests.length === 0, `requests: ${jobRequests.join(', ')}`);
    await expect(await page.isEnabled('#concept'), 'plain editing is not available');
  }, { fatal: true });

  await check('every control of the fine-tuning form has a label', async () => {
    const bad = await page.evaluate(unlabelledControls);
    await expect(bad.length === 0, `unlabelled: ${bad.join(', ')}`);
    const live = await page.$$eval('#ft-live, #ft-pairs-summary', (els) => els.map((e) => e.getAttribute('aria-live')));
    await expect(live.every((v) => v === 'polite'), `aria-live: ${live}`);
  });

  await check('with the token the job list loads (GET /v1/finetunes, empty)', async () => {
    const [res] = await Promise.all([page.waitForResponse((r) => isJobs(r, 'GET')), page.fill('#token', opts.token)]);
    await expect(res.status() === 200, `answered ${res.status()}`);
    await expect(res.request().headers().authorization === `Bearer ${opts.token}`, 'no Bearer token sent');
    await page.waitForSelector('#ft-jobs[data-loaded="1"]');
    await expect((await textOf(page, '#ft-jobs-note')) === 'No jobs yet.', 'no "No jobs yet." note');
  }, { fatal: true });

  await check('a WebP pair is found, a file that is not an image is named as left out, Clear empties the list', async () => {
    await page.setInputFiles('#ft-files', [file('notes.txt', Buffer.from('not an image')),
      file('w0.src.webp', p0[0]), file('w0.dst.WEBP', p0[1]), file('w1.src.webp', p1[0])]);
    await page.waitForSelector('#ft-pairs[data-pairs="1"][data-problems="2"]');
    const bad = await page.$$eval('#ft-pair-list .pair-bad', (lis) => lis.map((li) => li.textContent));
    await expect(bad.some((t) => t.startsWith('notes.txt is not a PNG, JPEG or WebP image')), `flagged ${JSON.stringify(bad)}`);
    await expect(bad.some((t) => t.includes('w1.src.webp has no target (w1.dst.webp')), `flagged ${JSON.stringify(bad)}`);
    await page.click('#ft-clear');
    await page.waitForSelector('#ft-pairs[data-pairs="0"][data-problems="0"]');
  });

  await check('a lone image is refused before sending, naming its missing partner', async () => {
    await page.fill('#ft-concept', CONCEPT);
    await page.setInputFiles('#ft-files', [file('p0.src.png', p0[0])]);
    await page.waitForSelector('#ft-pairs[data-problems="1"]');
    const before = jobRequests.length;
    await page.click('#ft-start');
    await page.waitForSelector('#ft-error:not([hidden])');
    const title = await textOf(page, '#ft-error .problem-title');
    const detail = await textOf(page, '#ft-error .problem-detail');
    await expect(title === 'Every image needs its partner', `title "${title}"`);
    await expect(detail.includes('p0.src.png has no target') && detail.includes('p0.dst.png'), `detail "${detail}"`);
    await expect((await textOf(page, '#ft-pair-list .pair-bad')).includes('p0.src.png'), 'the list does not flag it');
    await expect(jobRequests.length === before, 'a request was sent');
  });

  await check('an invalid concept name is refused before sending', async () => {
    await page.setInputFiles('#ft-files', [file('p0.dst.png', p0[1]), file('p1.src.png', p1[0]), file('p1.dst.png', p1[1])]);
    await page.fill('#ft-concept', '.hidden');
    const before = jobRequests.length;
    await page.click('#ft-start');
    await page.waitForFunction(() => document.querySelector('#ft-error .problem-title')?.textContent === 'Invalid concept name');
    await expect(jobRequests.length === before, 'a request was sent');
    await page.fill('#ft-concept', CONCEPT);
  });

  await check('pairs by file name and by the sources/targets pickers are listed (3 pairs)', async () => {
    await page.click('.ft-split > summary');
    await page.setInputFiles('#ft-sources', [file('p2.png', p2[0])]);
    await page.waitForSelector('#ft-pairs[data-problems="1"]'); // p2.png has no target yet
    await page.setInputFiles('#ft-targets', [file('p2.png', p2[1])]);
    await page.waitForSelector('#ft-pairs[data-pairs="3"][data-problems="0"]');
    const items = await page.$$eval('#ft-pair-list li', (lis) => lis.map((li) => li.textContent));
    await expect(items.length === 3 && items[2].includes('p2.png → p2.png') && items[0].includes('p0.src.png → p0.dst.png'),
      `listed: ${JSON.stringify(items)}`);
    await expect((await textOf(page, '#ft-pairs-summary')).startsWith('3 pairs found'), 'summary');
  });

  await check(`Start POSTs multipart with the token, the options and 6 files (202)`, async () => {
    await page.fill('#ft-steps', String(STEPS));
    await page.click('#ft-advanced > summary');
    await page.fill('#ft-batch', '2');
    await page.fill('#ft-crop', '32');
    await page.fill('#ft-train-crops', '32');
    await page.fill('#ft-eval-every', '20');
    // Every value the progress bar takes from here on, and the form the page
    // sends (Chromium does not hand file bodies to the test).
    await page.evaluate(() => {
      window.progressValues = [];
      new MutationObserver(() => window.progressValues.push(Number(document.getElementById('ft-progress').value)))
        .observe(document.getElementById('ft-progress'), { attributes: true, attributeFilter: ['value'] });
      window.sentForms = [];
      const fetch0 = window.fetch;
      window.fetch = (url, init) => {
        if (init && init.body instanceof FormData) {
          window.sentForms.push([...init.body.entries()].map(([k, v]) => [k, typeof v === 'string' ? v : `file:${v.name}`]));
        }
        return fetch0(url, init);
      };
    });
    const [res] = await Promise.all([page.waitForResponse((r) => isJobs(r, 'POST')), page.click('#ft-start')]);
    await expect(res.status() === 202, async () => `answered ${res.status()}: ${await res.text()}`);
    const headers = await res.request().allHeaders();
    await expect(headers.authorization === `Bearer ${opts.token}`, 'no Bearer token');
    await expect(headers['content-type'].startsWith('multipart/form-data; boundary='), `type ${headers['content-type']}`);
    const [sent] = await page.evaluate(() => window.sentForms);
    const fields = Object.fromEntries(sent.filter(([, v]) => !v.startsWith('file:')));
    const files = sent.filter(([k, v]) => k === 'file' && v.startsWith('file:')).map(([, v]) => v.slice(5)).sort().join(',');
    const want = { concept: CONCEPT, steps: String(STEPS), batch: '2', crop: '32', train_crops: '32', eval_every: '20', rank_search: 'true', keep_fraction: '0.5' };
    for (const [k, v] of Object.entries(want)) await expect(fields[k] === v, `field ${k} = ${fields[k]}`);
    await expect(files === 'p0.dst.png,p0.src.png,p1.dst.png,p1.src.png,p2.dst.png,p2.src.png', `files ${files}`);
    // What the server made of it.
    const job = await res.json();
    await expect(job.concept === CONCEPT && job.pairs === 3 && job.options.steps === STEPS && job.options.crop === 32
      && job.options.rank_search === true && job.options.keep_fraction === 0.5, `job ${JSON.stringify(job)}`);
    jobId = job.id;
    await page.waitForSelector(`#ft-job-list button[data-id="${jobId}"][aria-pressed="true"]`);
  }, { fatal: true });

  await check('the job panel follows the job to "succeeded"', async () => {
    await page.waitForSelector('#ft-job[data-state="succeeded"][data-done="1"]', { timeout: 60000 });
    await expect((await textOf(page, '#ft-job-state')) === 'succeeded', 'state not shown');
    await expect((await textOf(page, '#ft-live')).includes('succeeded'), `live region says "${await textOf(page, '#ft-live')}"`);
  }, { fatal: true });

  await check(`the progress bar went through intermediate steps to ${STEPS} / ${STEPS}`, async () => {
    const values = await page.evaluate(() => window.progressValues);
    await expect(values.some((v) => v > 0 && v < STEPS), `values seen: ${values}`);
    await expect(values[values.length - 1] === STEPS, `last value ${values[values.length - 1]}`);
    const bar = await page.$eval('#ft-progress', (p) => [p.value, p.max]);
    await expect(bar[0] === STEPS && bar[1] === STEPS, `progress ${bar}`);
    const text = await textOf(page, '#ft-progress-text');
    await expect(text === `${STEPS} / ${STEPS} steps (100%)`, `progress text "${text}"`);
  });

  await check('the loss chart has one point per step event of the stream', async () => {
    const events = await (await page.request.get(new URL(`v1/finetunes/${jobId}/events`, opts.url).href,
      { headers: { Authorization: `Bearer ${opts.token}` } })).text();
    const steps = events.split('\n').filter((l) => l === 'event: step').length;
    await page.waitForFunction((n) => document.getElementById('ft-chart').dataset.points === String(n), steps);
    await expect(steps >= 4, `only ${steps} step events`);
    const lines = await page.$$eval('#ft-chart polyline', (ps) => ps.map((p) => p.getAttribute('points').split(' ').length));
    await expect(lines.length >= 1 && lines.reduce((a, b) => a + b, 0) === steps, `polylines of ${lines} points`);
    const desc = await textOf(page, '#ft-chart desc');
    await expect(desc.includes(`${steps} points`), `chart description "${desc}"`);
  });

  await check('validation PSNR is shown beside the identity PSNR, and the result', async () => {
    const psnr = await textOf(page, '#ft-psnr');
    await expect(/^\d+\.\d\d dB \(identity \d+\.\d\d dB\)$/.test(psnr), `PSNR shown "${psnr}"`);
    const rows = await page.$$eval('#ft-result dt', (dts) => Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
    await expect(/dB$/.test(rows.PSNR || '') && /B$/.test(rows.adapter || ''), `result ${JSON.stringify(rows)}`);
  });

  await check('the job list and the concept lists show the new concept', async () => {
    await page.waitForFunction((id) => document.querySelector(`#ft-job-list button[data-id="${id}"] .badge`)?.textContent === 'succeeded', jobId);
    await page.waitForSelector(`#concept option[value="${CONCEPT}"]`, { state: 'attached' });
    await page.waitForSelector(`#concept-table button[data-name="${CONCEPT}"]`);
  });

  await check('"Try it" selects the concept; an edit with it shows its result', async () => {
    await page.click('#ft-try');
    await expect((await page.inputValue('#concept')) === CONCEPT, `concept is ${await page.inputValue('#concept')}`);
    await expect(await page.evaluate(() => document.activeElement.id === 'concept'), 'focus is not on the concept');
    await page.setInputFiles('#image', INPUT);
    await shown(page, 'before');
    const [res] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname.endsWith('/v1/edits')), page.click('#edit-button')]);
    await expect(res.status() === 200, `answered ${res.status()}`);
    await expect(res.headers()['x-e2gan-concept'] === CONCEPT, `X-E2gan-Concept: ${res.headers()['x-e2gan-concept']}`);
    await shown(page, 'after');
    const [w, h] = await imageSize(page, '#after');
    await expect(w === INPUT_W && h === INPUT_H, `after is ${w}×${h}`);
  });

  if (opts.screenshot) {
    await check(`screenshot to ${opts.screenshot}`, async () => {
      await page.screenshot({ path: opts.screenshot, fullPage: true });
    });
  }

  await check('a job for a name that is taken shows the problem (409 concept-exists)', async () => {
    const [res] = await Promise.all([page.waitForResponse((r) => isJobs(r, 'POST')), page.click('#ft-start')]);
    await expect(res.status() === 409, `answered ${res.status()}`);
    await page.waitForSelector('#ft-error:not([hidden])');
    const title = await textOf(page, '#ft-error .problem-title');
    const detail = await textOf(page, '#ft-error .problem-detail');
    await expect(title.endsWith('(409)') && detail.includes(CONCEPT), `shown "${title}" / "${detail}"`);
  });

  await check('Cancel (two clicks) cancels a running job (202), Remove (two clicks) removes it (204)', async () => {
    await page.fill('#ft-concept', `${CONCEPT}-cancel`);
    await page.fill('#ft-steps', '100000');
    const [res] = await Promise.all([page.waitForResponse((r) => isJobs(r, 'POST')), page.click('#ft-start')]);
    await expect(res.status() === 202, `answered ${res.status()}`);
    const id = (await res.json()).id;
    await page.waitForSelector(`#ft-job-list button[data-id="${id}"][aria-pressed="true"]`);
    await page.waitForSelector('#ft-job[data-state="running"]');
    await page.click('#ft-cancel');
    await expect((await textOf(page, '#ft-cancel')) === 'Confirm cancel', 'the first click did not ask for confirmation');
    const [del] = await Promise.all([page.waitForResponse((r) => isJobs(r, 'DELETE')), page.click('#ft-cancel')]);
    await expect(del.status() === 202, `DELETE answered ${del.status()}`);
    await page.waitForSelector('#ft-job[data-state="cancelled"]');
    await expect((await textOf(page, '#ft-cancel')) === 'Remove job', 'no Remove button');
    await page.click('#ft-cancel');
    const [rm] = await Promise.all([page.waitForResponse((r) => isJobs(r, 'DELETE')), page.click('#ft-cancel')]);
    await expect(rm.status() === 204, `DELETE answered ${rm.status()}`);
    await page.waitForSelector(`#ft-job-list button[data-id="${id}"]`, { state: 'detached' });
    await expect(await page.isHidden('#ft-job'), 'the panel still shows the removed job');
  });

  await check('the SSE parser copes with lines split across chunks, CRLF, comments and multi-line data', async () => {
    const events = await page.evaluate(async () => {
      const { SseParser } = await import('./sse.js');
      const p = new SseParser();
      const out = [];
      for (const chunk of ['id: 1\r', '\nevent: step\ndata: {"a"', ':1}\n', '\n: keep-alive\n\n', 'data: x\ndata: y\n\nid: 2\ndata: cut']) {
        out.push(...p.push(chunk));
      }
      return out;
    });
    await expect(JSON.stringify(events) === JSON.stringify([
      { id: '1', event: 'step', data: '{"a":1}' }, { id: '1', event: 'message', data: 'x\ny' }]), JSON.stringify(events));
  });

  await checkLayoutAndErrors(page, pageErrors);
});
