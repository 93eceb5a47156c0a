/**
 * Implements: one running job a run folder. Two runs started into one folder before either has logged a
 * step (two terminals, a script started twice) would both train into it, mixing their metrics and
 * checkpoints, and `--overwrite` or `--resume` given while a job runs there would remove or continue a
 * run that is still being written. So node 0's launcher (or the single process) holds `RUN/run.lock`
 * while it runs: its pid and host, linked into place so that of two starts only one gets it. A lock whose
 * process is gone (killed with -9) is taken over; one held on another host (a shared filesystem) cannot
 * be checked from here, and the error says how to clear it.
 */
import { linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const RUN_LOCK_FILE = 'run.lock';

interface LockHolder {
  pid: number;
  host: string;
  startedAt: string;
}

export class RunFolderInUseError extends Error {}

export interface RunLock {
  release(): void;
}

/** Takes `folder`'s lock for this process, or throws RunFolderInUseError naming the job that holds it. */
export function lockRunFolder(folder: string): RunLock {
  const path = join(folder, RUN_LOCK_FILE);
  const me: LockHolder = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString() };
  // Written whole under a name of its own, then linked into place (which fails when the lock exists):
  // a lock is never seen half written.
  const mine = `${path}.${process.pid}`;
  writeFileSync(mine, `${JSON.stringify(me)}\n`);
  try {
    return takeLock(path, mine, me, folder);
  } finally {
    rmSync(mine, { force: true });
  }
}

function takeLock(path: string, mine: string, me: LockHolder, folder: string): RunLock {
  for (let attempt = 0; ; attempt++) {
    try {
      linkSync(mine, path);
      let released = false;
      return {
        release: () => {
          if (released) return;
          released = true;
          // Only our own: a lock another start took over after ours was judged stale is not ours to remove.
          if (holderOf(path)?.pid === me.pid) rmSync(path, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = holderOf(path);
    const busy = holder === undefined ? undefined : whyHeld(holder, folder);
    // A stale lock goes once; a second EEXIST means another start took the folder at the same moment.
    if (busy !== undefined || attempt > 0) throw new RunFolderInUseError(busy ?? `${folder} was just taken by another start of a run`);
    rmSync(path, { force: true });
  }
}

/** Why `holder` still holds the folder, or undefined when its process is gone. */
function whyHeld(holder: LockHolder, folder: string): string | undefined {
  if (holder.host !== hostname()) {
    return (
      `${folder} is in use by a job on ${holder.host} (pid ${holder.pid}, started ${holder.startedAt}): stop it (gpt-hybrid ctl ${folder} stop) or give ` +
      `another --out; if that job is gone, delete ${join(folder, RUN_LOCK_FILE)}`
    );
  }
  if (!processAlive(holder.pid)) return undefined;
  // The pid may since belong to another program: say how to clear a lock that is wrong.
  return (
    `${folder} is in use by a running job (pid ${holder.pid}, started ${holder.startedAt}): stop it (gpt-hybrid ctl ${folder} stop, or Ctrl-C) or give ` +
    `another --out; if no job of this folder runs, delete ${join(folder, RUN_LOCK_FILE)}`
  );
}

/** The lock's holder; undefined for a lock that cannot be read (left half written: judged stale). */
function holderOf(path: string): LockHolder | undefined {
  try {
    const holder = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockHolder>;
    if (typeof holder.pid !== 'number' || typeof holder.host !== 'string') return undefined;
    return { pid: holder.pid, host: holder.host, startedAt: String(holder.startedAt) };
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it lives, as another user's.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
