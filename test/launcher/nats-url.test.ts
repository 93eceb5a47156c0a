// Tests: how the job's NATS servers are named (--nats, $NATS_URL) and which one each process tries first.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveNats, serversFor } from '../../src/launcher/nats-url.ts';

test('nats url - a cluster list rotates by rank, so consecutive ranks start on different servers', () => {
  const url = 'nats://a:1,nats://b:2,nats://c:3';
  assert.deepEqual(serversFor(url, 0), ['nats://a:1', 'nats://b:2', 'nats://c:3']);
  assert.deepEqual(serversFor(url, 1), ['nats://b:2', 'nats://c:3', 'nats://a:1']);
  assert.deepEqual(serversFor(url, 5), ['nats://c:3', 'nats://a:1', 'nats://b:2']);
  assert.deepEqual(serversFor('nats://a:1', 7), ['nats://a:1']);
});

test('nats url - --nats wins over $NATS_URL, and a list is kept in order without spaces', async () => {
  const saved = process.env.NATS_URL;
  process.env.NATS_URL = 'nats://env:4222';
  try {
    assert.deepEqual(await resolveNats(' nats://a:1 , nats://b:2', false, () => {}), { url: 'nats://a:1,nats://b:2' });
    assert.deepEqual(await resolveNats(undefined, false, () => {}), { url: 'nats://env:4222' });
  } finally {
    if (saved === undefined) delete process.env.NATS_URL;
    else process.env.NATS_URL = saved;
  }
});
