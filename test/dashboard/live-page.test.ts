/**
 * The live job page of a real pp2 job (two worker processes, a private NATS server), driven in headless
 * Chromium (Debian's `chromium`, installed by .ci/run) through Playwright: the loss chart gains points as
 * steps complete, the rank table lists both ranks, the page's pause button pauses the job (as `ctl status`
 * confirms: the step counter holds) and its resume button resumes it; the page is saved as a screenshot;
 * its stop button ends the job with exit 0. Also: the address option's parsing, and the token asked for
 * beyond loopback.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { parseDashboardAddress } from '../../src/dashboard/address.ts';
import { runCli, startCli, writeTestConfig } from '../support/cli.ts';

let server: NatsServerHandle;
before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await server.stop();
});

/** Debian's chromium (or another Chromium on PATH); the test fails, saying how to get one, without it. */
function chromiumExecutable(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser || command -v google-chrome'], { encoding: 'utf8' }).trim().split('\n')[0]!;
  } catch {
    assert.fail('no Chromium on PATH: install Debian\'s chromium package (apt-get install chromium), as .ci/run does');
  }
}

async function ctlStatus(out: string): Promise<{ state: string; step: number }> {
  const { code, output } = await runCli(['ctl', out, 'status', '--json']);
  assert.equal(code, 0, output);
  return JSON.parse(output) as { state: string; step: number };
}

async function until<T>(what: string, probe: () => Promise<T>, done: (value: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(value)})`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

test('dashboard - [HOST:]PORT: loopback unless a host is given; bad forms refused', () => {
  assert.deepEqual(parseDashboardAddress('8080'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseDashboardAddress('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
  assert.deepEqual(parseDashboardAddress('[::1]:9000'), { host: '::1', port: 9000 });
  for (const bad of ['', 'x', '70000', 'host:', ':80', '1.2.3.4:port']) assert.equal(parseDashboardAddress(bad), undefined, bad);
});

test('dashboard - a pp2 job\'s live page: loss chart grows, both ranks listed, pause and resume from the page, screenshot, stop', async () => {
  const config = writeTestConfig({ steps: 500 });
  const runs = mkdtempSync(join(tmpdir(), 'gpt-hybrid-dashboard-'));
  const out = join(runs, 'pp2');
  const job = startCli(['train', config, '--out', out, '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--dashboard', '0', '--nats', server.url]);
  let browser: Browser | undefined;
  try {
    const [, url] = await job.waitFor(/live job page: (http:\/\/127\.0\.0\.1:\d+\/)\n/, 120_000);
    // Bound to loopback: no token asked; the API refuses a control request without the page's header.
    const refused = await fetch(`${url}api/control/pause`, { method: 'POST' });
    assert.equal(refused.status, 403);

    browser = await chromium.launch({ executablePath: chromiumExecutable(), args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(url!);

    // A rank's row is listed from the job's layout before it registers (pid '-'): wait for both pids.
    await page.waitForFunction(() => {
      const rows = Array.from(document.querySelectorAll('#ranks tbody tr'));
      return rows.length === 2 && rows.every((tr) => /^\d+$/.test(tr.querySelectorAll('td')[2]?.textContent ?? ''));
    }, null, { timeout: 120_000 });
    const rows = await page.$$eval('#ranks tbody tr', (trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent)));
    assert.deepEqual(rows.map((cells) => [cells[0], cells[4]]), [['0', '0'], ['1', '1']], 'rank and pipeline stage columns');
    const pids = [...job.output().matchAll(/rank (\d) registered \(node 0, pid (\d+)/g)].map((m) => [m[1], m[2]]);
    for (const [rank, pid] of pids) assert.equal(rows[Number(rank)]![2], pid, `rank ${rank}'s pid`);

    const points = () => page.$eval('#loss-chart', (canvas) => Number((canvas as HTMLCanvasElement).dataset.points ?? 0));
    const first = await until('a loss point on the chart', points, (n) => n >= 1, 60_000);
    await until('the loss chart gaining points', points, (n) => n >= first + 2, 60_000);
    await page.waitForFunction(() => document.querySelectorAll('#timeline-chart').length === 1 && document.getElementById('state')?.textContent === 'running');

    await page.click('#pause');
    const held = await until('the job paused (ctl status)', () => ctlStatus(out), (s) => s.state === 'paused', 30_000);
    await page.waitForFunction(() => document.body.dataset.state === 'paused', null, { timeout: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal((await ctlStatus(out)).step, held.step, 'the step counter moved while paused');
    const pausedPoints = await points();

    await page.click('#resume');
    await until('the job running again past its paused step (ctl status)', () => ctlStatus(out), (s) => s.state === 'running' && s.step > held.step, 60_000);
    await until('the loss chart gaining points after resume', points, (n) => n > pausedPoints, 30_000);

    const screenshot = join(runs, 'dashboard.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    assert.ok(statSync(screenshot).size > 20_000, 'a screenshot of the whole page');
    assert.deepEqual([...readFileSync(screenshot).subarray(1, 4)], [...Buffer.from('PNG')]);
    process.stdout.write(`# dashboard screenshot: ${screenshot}\n`);

    page.on('dialog', (dialog) => void dialog.accept());
    await page.click('#stop');
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.output());
    assert.match(job.output(), /page: stop: stopping/);
    assert.deepEqual(pageErrors, []);
  } finally {
    await browser?.close();
    job.child.kill('SIGKILL');
  }
});

test('dashboard - bound beyond loopback it asks for the token it printed', async () => {
  const config = writeTestConfig({ steps: 500 });
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-dashboard-')), 'dp1');
  const job = startCli(['train', config, '--out', out, '--dashboard', '0.0.0.0:0', '--nats', server.url]);
  try {
    const [, port, token] = await job.waitFor(/live job page: http:\/\/0\.0\.0\.0:(\d+)\/\?token=([0-9a-f]{32})\n/, 120_000);
    const base = `http://127.0.0.1:${port}`;
    assert.equal((await fetch(`${base}/api/state`)).status, 401);
    assert.equal((await fetch(`${base}/api/state?token=${'0'.repeat(32)}`)).status, 401);
    const state = (await (await fetch(`${base}/api/state?token=${token}`)).json()) as { job: { coordinates: unknown[] } };
    assert.equal(state.job.coordinates.length, 1);
    const stop = await fetch(`${base}/api/control/stop`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'x-gpt-hybrid': '1' } });
    assert.equal(stop.status, 200, await stop.text());
    assert.equal((await job.exited).code, 0, job.output());
  } finally {
    job.child.kill('SIGKILL');
  }
});
