/**
 * Implements: `gpt-hybrid ctl`: one control message to a running job, its answer printed (status as a
 * table, status-table.ts; the rest as JSON), or for a run folder whose job has ended, how it ended.
 * The target is a job id or a run folder whose job.json names the job and its NATS server; the NATS
 * credentials come from ctl's own options and variables, as the job's did (job.json holds none).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Bus } from '../comm/bus.ts';
import { hasLogin, maskProcessTitle, resolveNatsCredentials, splitUrlCredentials } from '../comm/nats-credentials.ts';
import { connectNats, DEFAULT_NATS_URL, natsServerList } from '../comm/nats-transport.ts';
import { TransportTimeoutError } from '../comm/transport.ts';
import { SUBJECTS } from '../protocol/subjects.ts';
import { checkJobId, isJobId } from '../comm/subjects.ts';
import type { CtlCommand } from './ctl-args.ts';
import { readJobFile, type JobFile } from '../launcher/job-file.ts';
import { PRIVATE_SERVER_TOKEN_FILE } from '../launcher/nats-url.ts';
import { readOwnerOnlyFile } from '../comm/owner-only-file.ts';
import { endedSummary, statusTable } from './status-table.ts';
import { givenJobKey, JOB_KEY_FILE, JOB_KEY_VARIABLE, readJobKeyFile } from '../comm/job-key.ts';

/** The job obeys only messages signed with its key: --job-key-file, else the variable, else the run folder's file. */
function ctlJobKey(command: CtlCommand, runFolder: string | undefined): Buffer {
  const given = givenJobKey(command.jobKeyFile);
  if (given !== undefined) return given;
  const inFolder = runFolder === undefined ? undefined : join(runFolder, JOB_KEY_FILE);
  if (inFolder !== undefined && existsSync(inFolder)) return readJobKeyFile(inFolder);
  throw new Error(
    `no key for job ${command.target}: the job obeys only messages signed with its key, which its launcher keeps in ` +
      `<run-folder>/${JOB_KEY_FILE} (readable by its owner only); give ctl the run folder${inFolder === undefined ? '' : ' (this one has none: is it the folder of node 0?)'}, --job-key-file FILE or $${JOB_KEY_VARIABLE}`,
  );
}

export async function runCtl(command: CtlCommand): Promise<number> {
  maskProcessTitle();
  let jobId = command.target;
  let natsUrl = command.nats ?? process.env.NATS_URL;
  let job: JobFile | undefined;
  const onDisk = existsSync(command.target);
  const isFolder = onDisk && statSync(command.target).isDirectory();
  // A file here that could be a job id's name (`notes`) does not stand in the way of that job id.
  if (onDisk && !isFolder && !isJobId(command.target)) {
    throw new Error(`${command.target} is a file: give a run folder (the job's --out) or the job id`);
  }
  const runFolder = isFolder ? command.target : undefined;
  if (runFolder !== undefined) {
    job = readJobFile(runFolder);
    if (job === undefined) throw new Error(`${runFolder} is a folder without job.json: give a run folder of a multi-process job, or the job id`);
    jobId = job.jobId;
    natsUrl = command.nats ?? job.nats;
    const ended = job.ended;
    if (ended !== undefined) {
      if (command.action !== 'status') throw new Error(`job ${jobId} has ended (exit ${ended.exitCode} at ${ended.at}: ${ended.reason}): nothing to ${command.action}`);
      process.stdout.write(command.json === true ? JSON.stringify({ jobId, state: ended.exitCode === 0 ? 'done' : 'failed', ended }, null, 2) + '\n' : endedSummary({ ...job, ended }, runFolder));
      return 0;
    }
  }
  // Before connecting: an open connection would keep the process alive after the error.
  checkJobId(jobId);
  const key = ctlJobKey(command, runFolder);
  const { servers, credentials: fromUrl } = splitUrlCredentials(natsServerList(natsUrl ?? DEFAULT_NATS_URL));
  const resolved = resolveNatsCredentials(command.natsCredentials ?? {}, fromUrl);
  // A job on its launcher's private server: that server's login, kept in the run folder.
  const privateToken = runFolder === undefined ? undefined : join(runFolder, PRIVATE_SERVER_TOKEN_FILE);
  const credentials =
    !hasLogin(resolved.credentials) && privateToken !== undefined && existsSync(privateToken)
      ? { ...resolved.credentials, token: readOwnerOnlyFile(privateToken).trim() }
      : resolved.credentials;
  const transport = await connectNats({ url: servers, ...credentials, name: `gpt-hybrid ctl ${jobId}` });
  const bus = new Bus({ jobId, transport, log: (line) => process.stderr.write(`${line}\n`), key });
  try {
    const answer = await bus.request(SUBJECTS.control, { kind: 'control', command: command.action, ...(command.save === true ? { save: true } : {}) }, command.timeoutMs);
    if (answer.kind !== 'control-reply') throw new Error(`job ${jobId} answered with an unexpected ${answer.kind} message`);
    if (command.action === 'status' && command.json !== true && answer.status !== undefined) {
      process.stdout.write(statusTable(answer.status, { job, runFolder }));
    } else {
      process.stdout.write(JSON.stringify(command.action === 'status' ? answer.status : { ok: answer.ok, message: answer.message, state: answer.status?.state, step: answer.status?.step }, null, 2) + '\n');
    }
    return answer.ok ? 0 : 1;
  } catch (error) {
    if (error instanceof TransportTimeoutError) {
      throw new Error(`job ${jobId} did not answer within ${command.timeoutMs} ms at ${servers.join(',')}: is it running, and on that server?`);
    }
    throw error;
  } finally {
    await bus.close().catch(() => undefined);
  }
}
