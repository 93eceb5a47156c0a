import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dispatch, spawn, start, stop } from 'nact';
import { escalateToJob } from '../../src/actors/supervision.ts';
import { Bus } from '../../src/comm/bus.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import type { Message } from '../../src/protocol/messages.ts';

test('supervision - a crashing compute actor stops, and the job hears a fatal message naming the rank', async () => {
  const network = new LocalNetwork();
  const worker = new Bus({ jobId: 'sup', transport: network.connect(), log: () => {} });
  const coordinator = new Bus({ jobId: 'sup', transport: network.connect(), log: () => {} });
  const heard: Message[] = [];
  coordinator.subscribe('coord.fatal', (message) => void heard.push(message));
  const system = start();
  let handled = 0;
  const fatal = new Promise<string>((resolve) => {
    const actor = spawn(
      system,
      async (state: number, message: string) => {
        handled++;
        if (message === 'boom') throw new Error('out of memory in the LM head');
        return state + 1;
      },
      'trainer',
      { initialState: 0, onCrash: escalateToJob({ bus: worker, rank: 3, subject: 'coord.fatal', log: () => {}, onFatal: resolve }) },
    );
    dispatch(actor, 'step');
    dispatch(actor, 'boom');
    // Stopped: later messages are not handled.
    dispatch(actor, 'step');
  });
  assert.equal(await fatal, 'out of memory in the LM head');
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.equal(handled, 2);
  assert.deepEqual(heard, [{ kind: 'fatal', rank: 3, reason: 'out of memory in the LM head' }]);
  stop(system);
  await worker.close();
  await coordinator.close();
});
