/**
 * Waits for a condition that a timer makes true, polling instead of sleeping a fixed time: a fixed
 * sleep is a guess at how busy the machine is, and on a loaded CI machine a timer can fire late.
 */
import assert from 'node:assert/strict';

export async function eventually(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
