import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DynamicLossScaler } from '../../src/train/loss-scaler.ts';

test('loss scaler - overflows skip steps and halve the scale after the hysteresis; clean runs double it', () => {
  const scaler = new DynamicLossScaler({ initialScale: 1024, growthInterval: 3, hysteresis: 2 });
  assert.deepEqual(scaler.update(true), { skip: true });
  assert.equal(scaler.scale, 1024, 'first overflow only spends hysteresis');
  assert.deepEqual(scaler.update(true), { skip: true });
  assert.equal(scaler.scale, 512);
  assert.deepEqual(scaler.update(true), { skip: true });
  assert.equal(scaler.scale, 256, 'the hysteresis budget stays spent until a growth');
  for (let i = 0; i < 2; i++) assert.deepEqual(scaler.update(false), { skip: false });
  assert.equal(scaler.scale, 256);
  scaler.update(false);
  assert.equal(scaler.scale, 512, 'growthInterval clean steps double it');
  scaler.update(true);
  assert.equal(scaler.scale, 512, 'growth restored the hysteresis budget');
  scaler.update(true);
  assert.equal(scaler.scale, 256);
});

test('loss scaler - never below the minimum', () => {
  const scaler = new DynamicLossScaler({ initialScale: 2, growthInterval: 10, hysteresis: 1, minScale: 1 });
  for (let i = 0; i < 5; i++) scaler.update(true);
  assert.equal(scaler.scale, 1);
});
