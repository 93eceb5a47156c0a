/**
 * Waits for a condition that a timer makes true, polling instead of sleeping a fixed time: a fixed
 * sleep is a guess at how busy the machine is, and on a loaded CI machine a timer can fire late.
 */
import assert from 'node:assert/strict';

/** `what` may be a function, to say what was seen when it fails. */
export async function eventually(what: string | (() => string), condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`${typeof what === 'string' ? what : what()}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Lets queued actor messages run, for checks that something did not happen or that a chain of messages
 * ended: nact handles a message a turn of the event loop (setImmediate), so turns are counted as well as
 * time (on a stalled machine a timer can fire before the turns it was meant to cover).
 */
export async function settle(ms = 20, turns = 100): Promise<void> {
  const until = Date.now() + ms;
  for (let turn = 0; turn < turns || Date.now() < until; turn++) await new Promise((resolve) => setImmediate(resolve));
}
