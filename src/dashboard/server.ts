/**
 * Implements: the live job page's web server in node 0's launcher (`train --dashboard [HOST:]PORT`),
 * on Hono: the page and its scripts, `GET /api/state` (what the page draws: the coordinator's status,
 * asked over the job's bus like `ctl status`, plus the JobView's metrics, timeline and log tail) and
 * `POST /api/control/COMMAND`, which sends the very control message `ctl COMMAND` sends.
 *
 * Bound beyond loopback it asks for a token (printed with the address at start) in `?token=` or an
 * `Authorization: Bearer` header. Control requests must carry an `X-Gpt-Hybrid` header: a page of
 * another site cannot add one without a CORS preflight this server never grants, so it cannot pause
 * or stop the job from a visitor's browser.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import type { Bus } from '../comm/bus.ts';
import { TransportTimeoutError } from '../comm/transport.ts';
import { CONTROL_COMMANDS, type ControlCommand, type ControlReplyMessage } from '../protocol/messages.ts';
import { SUBJECTS } from '../protocol/subjects.ts';
import { lastCheckpoint } from '../cli/status-table.ts';
import type { GridCoordinates } from '../parallel/grid.ts';
import { isLoopback, type DashboardAddress } from './address.ts';
import type { JobView } from './job-view.ts';

export interface DashboardJob {
  jobId: string;
  runFolder: string;
  layout: string;
  /** Each rank's place in the grid, by rank. */
  coordinates: GridCoordinates[];
  totalSteps: number;
  bus: Bus;
  view: JobView;
  /** The launcher's log (which the view's tail hears too). */
  log: (line: string) => void;
}

export interface Dashboard {
  /** The page's address, with the token when one is needed. */
  readonly url: string;
  close(): Promise<void>;
}

/** How long the page waits for the coordinator's answer before showing the job as not answering. */
const STATUS_TIMEOUT_MS = 2_000;
/** Status asked more often than this (several open pages) is answered from the last reply. */
const STATUS_REUSE_MS = 500;

const PAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'page');
const CHART_JS = join(dirname(fileURLToPath(import.meta.resolve('chart.js'))), 'chart.umd.min.js');

export async function startDashboard(address: DashboardAddress, job: DashboardJob): Promise<Dashboard> {
  const token = isLoopback(address.host) ? undefined : randomBytes(16).toString('hex');
  const app = new Hono();
  const files = {
    page: readFileSync(join(PAGE_DIR, 'index.html'), 'utf8'),
    script: readFileSync(join(PAGE_DIR, 'app.js'), 'utf8'),
    chart: readFileSync(CHART_JS, 'utf8'),
  };

  if (token !== undefined) {
    app.use('*', async (c, next) => {
      const given = c.req.query('token') ?? c.req.header('authorization')?.replace(/^Bearer /, '');
      if (given === undefined || !sameSecret(given, token)) return c.text('this job page needs its token: open the address the launcher printed (with ?token=...)\n', 401);
      await next();
    });
  }
  app.get('/', (c) => c.html(files.page));
  app.get('/app.js', (c) => c.body(files.script, 200, { 'content-type': 'text/javascript; charset=utf-8' }));
  app.get('/chart.js', (c) => c.body(files.chart, 200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'max-age=3600' }));

  let lastStatus: { at: number; reply: Promise<ControlReplyMessage['status'] | { error: string }> } | undefined;
  const status = () => {
    if (lastStatus === undefined || performance.now() - lastStatus.at > STATUS_REUSE_MS) {
      lastStatus = { at: performance.now(), reply: control(job.bus, 'status').then((answer) => answer.status ?? { error: answer.message }, (error: unknown) => ({ error: reason(error) })) };
    }
    return lastStatus.reply;
  };

  app.get('/api/state', async (c) => {
    const since = Math.max(0, Number(c.req.query('since') ?? 0) || 0);
    return c.json({
      job: { jobId: job.jobId, layout: job.layout, coordinates: job.coordinates, totalSteps: job.totalSteps, runFolder: job.runFolder },
      status: await status(),
      steps: job.view.steps.slice(since),
      stepCount: job.view.steps.length,
      validation: job.view.validation,
      checkpoint: lastCheckpoint(job.runFolder) ?? null,
      timeline: job.view.timeline,
      log: job.view.logTail,
    });
  });

  app.post('/api/control/:command', async (c) => {
    const command = c.req.param('command');
    if (c.req.header('x-gpt-hybrid') === undefined) return c.json({ ok: false, message: 'control requests need the X-Gpt-Hybrid header (the page sends it)' }, 403);
    if (command === 'status' || !(CONTROL_COMMANDS as readonly string[]).includes(command)) {
      return c.json({ ok: false, message: `unknown command "${command}": use pause, resume, checkpoint or stop` }, 400);
    }
    try {
      const answer = await control(job.bus, command as ControlCommand);
      job.log(`page: ${command}: ${answer.message}`);
      return c.json({ ok: answer.ok, message: answer.message, state: answer.status?.state ?? null });
    } catch (error) {
      return c.json({ ok: false, message: reason(error) }, 504);
    }
  });

  const server = await listen(app, address);
  const port = (server.address() as AddressInfo).port;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return {
    url: `http://${host}:${port}/${token === undefined ? '' : `?token=${token}`}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open pages hold keep-alive connections that would keep close() waiting.
        (server as Server).closeAllConnections();
      }),
  };
}

async function control(bus: Bus, command: ControlCommand): Promise<ControlReplyMessage> {
  const answer = await bus.request(SUBJECTS.control, { kind: 'control', command }, STATUS_TIMEOUT_MS);
  if (answer.kind !== 'control-reply') throw new Error(`the coordinator answered with a ${answer.kind} message`);
  return answer;
}

function reason(error: unknown): string {
  if (error instanceof TransportTimeoutError) return `the coordinator did not answer within ${STATUS_TIMEOUT_MS} ms`;
  return error instanceof Error ? error.message : String(error);
}

function sameSecret(given: string, token: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Resolves once listening; a port in use or an address not of this machine is an error naming it. */
function listen(app: Hono, address: DashboardAddress): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: address.host, port: address.port }, () => resolve(server));
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(new Error(`--dashboard ${address.host}:${address.port}: cannot listen (${error.code ?? error.message}): ${error.code === 'EADDRINUSE' ? 'pick another port, or 0 for any free one' : 'give an address of this machine'}`)),
    );
  });
}
