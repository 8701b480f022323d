// What the browser tests share: a check runner (one line a check, a
// summary, the exit status), Debian's chromium through playwright-core, and
// in-page helpers.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// The photo both page tests edit (tests/data/chelsea.png) and its size.
export const INPUT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'data', 'chelsea.png');
export const INPUT_W = 203, INPUT_H = 157;

const results = [];
let stopReason = null; // set when a step that later checks need has failed

export function report(name, ok, why) {
  results.push(ok);
  const n = results.length;
  console.log(ok ? `ok   ${n} - ${name}` : `FAIL ${n} - ${name}: ${why}`);
}

// A check; with {fatal: true} the checks after it are not run when it fails
// (they would only time out) and count as failed.
export async function check(name, fn, { fatal = false } = {}) {
  if (stopReason) {
    report(name, false, `not run (${stopReason} failed)`);
    return;
  }
  const t0 = Date.now();
  try {
    await fn();
    report(`${name} (${Date.now() - t0} ms)`, true);
  } catch (err) {
    report(name, false, String(err && err.message ? err.message : err).split('\n')[0]);
    if (fatal) stopReason = name;
  }
}

// message: a string, or a function that makes it (only called on failure).
export async function expect(cond, message) {
  if (!cond) throw new Error(typeof message === 'function' ? await message() : message);
}

// Runs body(page, pageErrors) in a fresh headless chromium profile, then
// prints the summary and exits (1 on any failure).
export async function runBrowser({ chromiumPath, width, timeout, name }, body) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2gan-chromium-'));
  const pageErrors = [];
  const t0 = Date.now();
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width, height: 900 },
      acceptDownloads: true,
      timeout,
    });
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await body(page, pageErrors);
  } catch (err) {
    report('browser session', false, String(err && err.message ? err.message : err).split('\n')[0]);
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  const passed = results.filter(Boolean).length;
  const failed = results.length - passed;
  console.log(`${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

// The checks every page test ends with: nothing overflows a 360 px wide
// viewport, and the page threw no uncaught error.
export async function checkLayoutAndErrors(page, pageErrors) {
  await check('at 360 px wide nothing overflows sideways', async () => {
    await page.setViewportSize({ width: 360, height: 800 });
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    await expect(w <= 360, `the page is ${w} px wide`);
  });

  await check('no uncaught script errors', async () => {
    await expect(pageErrors.length === 0, pageErrors.join(' | '));
  });
}

// ---- in-page helpers ----------------------------------------------------

// The text of an element that must be there by now (no waiting).
export async function textOf(page, sel) {
  const el = await page.$(sel);
  if (!el) throw new Error(`no element ${sel}`);
  return el.textContent();
}

// Waits until image #id is shown and decoded.
export function shown(page, id) {
  return page.waitForFunction((i) => {
    const img = document.getElementById(i);
    return !img.hidden && img.complete && img.naturalWidth > 0;
  }, id);
}

export const imageSize = (page, sel) => page.$eval(sel, (img) => [img.naturalWidth, img.naturalHeight]);

// Every form control has an accessible name (a <label>, aria-label or
// aria-labelledby).  Runs in the page.
export function unlabelledControls() {
  return [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
      && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
    .map((el) => el.id || el.outerHTML.slice(0, 60));
}
