/**
 * Implements: the transport figures, between two processes on this machine:
 * - `nats_gbps`: 4 MB float32 tensors sent back to back from rank 0 to rank 1 through our Bus and
 *   ProcessGroup over NATS (encode, chunk, publish, reassemble, decode, validate: every byte a tensor
 *   costs in a job), timed by rank 0 from the first send to rank 1's acknowledgement of the last;
 * - `nats_vs_tcp`: that over the same bytes on a raw TCP loopback socket (length-prefixed, reassembled
 *   into one buffer per message: the least any framing costs);
 * - `p2p_gbps` and `p2p_vs_tcp`: the same sends through the ProcessGroup over the data plane's direct
 *   links (comm/data-plane.ts: msgpackr envelopes on a proven TCP connection), against the raw TCP figure;
 * - `allreduce_ratio`: the all-reduce of a 10M-parameter float32 gradient over 2 ranks (the algorithm
 *   the process group picks at that size, in place as a job reduces its step's gradient buffer) over one
 *   send of those bytes, both over the data plane, medians of 9, from the collectives test's worker in
 *   its 'big-bench' mode (the same program the test checks for correctness).
 *
 * Run as `node --import tsx bench/transport.ts --peer <nats url> <job id> <rank> <tcp port> <rounds>` it
 * is one of the two ranks.
 */
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { PerformanceObserver } from 'node:perf_hooks';
import { createHash } from 'node:crypto';
import { Bus } from '../src/comm/bus.ts';
import { DataPlane } from '../src/comm/data-plane.ts';
import { chooseAllReduceAlgorithm, ProcessGroup } from '../src/comm/collectives.ts';
import { freePort } from '../src/comm/nats-server.ts';
import { connectNats } from '../src/comm/nats-transport.ts';
import { runPeers } from './peers.ts';
import { median } from './report.ts';

const SCRIPT = fileURLToPath(import.meta.url);
const COLLECTIVES_WORKER = fileURLToPath(new URL('../test/comm/fixtures/collective-worker.ts', import.meta.url));
/** 4 MB of float32. */
const TENSOR_ELEMENTS = 1024 * 1024;
const TENSOR_BYTES = TENSOR_ELEMENTS * 4;
/** Tensors per timed round. */
const PER_ROUND = 8;
const ALL_REDUCE_ELEMENTS = 10_000_000;
/** /proc/<pid>/stat counts CPU time in clock ticks: 100 per second on Linux (USER_HZ). */
const CLOCK_TICKS_PER_SECOND = 100;

export interface TransportResult {
  natsGbps: number;
  tcpGbps: number;
  natsVsTcp: number;
  p2pGbps: number;
  p2pVsTcp: number;
  /** CPU milliseconds per megabyte through NATS, on each side (not counting the server's). */
  senderCpuMsPerMb: number;
  receiverCpuMsPerMb: number;
  /** Of which garbage collection (pauses on the main thread), per megabyte, on each side. */
  senderGcMsPerMb: number;
  receiverGcMsPerMb: number;
  /** The NATS server's CPU per megabyte over the whole exchange (undefined when it cannot be read). */
  serverCpuMsPerMb: number | undefined;
  /** The server's max_payload: a tensor above it travels in chunks. */
  maxPayload: number;
  allReduceMs: number;
  oneSendMs: number;
  allReduceRatio: number;
  allReduceAlgorithm: string;
}

/** `serverPid`: the NATS server's process, whose CPU time is read from /proc where there is one. */
export async function measureTransport(options: { natsUrl: string; rounds: number; serverPid?: number }, say: (line: string) => void): Promise<TransportResult> {
  say(`  ${PER_ROUND} x 4 MB tensors from one process to another, through NATS, the data plane and raw TCP (${options.rounds} rounds each) ...`);
  const port = await freePort();
  const job = `bench-p2p-${process.pid}-${Date.now().toString(36)}`;
  const serverCpuBefore = processCpuMs(options.serverPid);
  const [sender, receiver] = await runPeers(SCRIPT, 2, (rank) => ['--peer', options.natsUrl, job, String(rank), String(port), String(options.rounds)], 120_000);
  const serverCpuAfter = processCpuMs(options.serverPid);
  // The untimed round's bytes count too: the server moved them; barriers and connecting are a small part.
  const serverCpuMsPerMb =
    serverCpuBefore === undefined || serverCpuAfter === undefined ? undefined : (serverCpuAfter - serverCpuBefore) / (((options.rounds + 1) * PER_ROUND * TENSOR_BYTES) / 1e6);
  const maxPayload = sender.json!.maxPayload as number;
  const { natsMs, tcpMs, directMs } = sender.json as { natsMs: number[]; tcpMs: number[]; directMs: number[] };
  const gbps = (ms: number) => (PER_ROUND * TENSOR_BYTES) / (ms / 1000) / 1e9;
  const natsGbps = gbps(median(natsMs));
  const tcpGbps = gbps(median(tcpMs));
  const p2pGbps = gbps(median(directMs));
  const senderCpuMsPerMb = sender.json!.natsCpuMsPerMb as number;
  const receiverCpuMsPerMb = receiver.json!.natsCpuMsPerMb as number;
  const senderGcMsPerMb = sender.json!.natsGcMsPerMb as number;
  const receiverGcMsPerMb = receiver.json!.natsGcMsPerMb as number;
  say(
    `    NATS ${natsGbps.toFixed(2)} GB/s (max_payload ${(maxPayload / 1048576).toFixed(0)} MiB; CPU per MB: sender ${senderCpuMsPerMb.toFixed(2)} ms, ` +
      `receiver ${receiverCpuMsPerMb.toFixed(2)} ms, of which GC ${senderGcMsPerMb.toFixed(2)} and ${receiverGcMsPerMb.toFixed(2)} ms; ` +
      `server ${serverCpuMsPerMb === undefined ? 'not measured' : `${serverCpuMsPerMb.toFixed(2)} ms`}), data plane ${p2pGbps.toFixed(2)} GB/s, TCP ${tcpGbps.toFixed(2)} GB/s`,
  );

  const algorithm = chooseAllReduceAlgorithm(ALL_REDUCE_ELEMENTS, 2);
  say(`  all-reduce of 10M float32 over 2 ranks (${algorithm}, the default at that size) against one send of the same bytes, over the data plane ...`);
  const bigJob = `bench-allreduce-${process.pid}-${Date.now().toString(36)}`;
  // Over the data plane, as a job's data-parallel groups run it.
  const [first] = await runPeers(COLLECTIVES_WORKER, 2, (rank) => [options.natsUrl, bigJob, String(rank), '2', 'big-bench+tcp', '60000'], 180_000);
  const records = first.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { step?: string; ms?: number[]; mismatches?: number });
  const timesOf = (step: string) => {
    const record = records.find((r) => r.step === step);
    if (record?.ms === undefined) throw new Error(`the collectives worker printed no '${step}' timings:\n${first.stdout}`);
    if ((record.mismatches ?? 0) > 0) throw new Error(`the ${step} all-reduce gave ${record.mismatches} wrong sums`);
    return record.ms;
  };
  const allReduceMs = median(timesOf(`big-${algorithm}-in-place`));
  const oneSendMs = median(timesOf('one-send'));
  say(`    all-reduce ${allReduceMs.toFixed(0)} ms, one send ${oneSendMs.toFixed(0)} ms`);
  return { natsGbps, tcpGbps, natsVsTcp: natsGbps / tcpGbps, p2pGbps, p2pVsTcp: p2pGbps / tcpGbps, senderCpuMsPerMb, receiverCpuMsPerMb, senderGcMsPerMb, receiverGcMsPerMb, serverCpuMsPerMb, maxPayload, allReduceMs, oneSendMs, allReduceRatio: allReduceMs / oneSendMs, allReduceAlgorithm: algorithm };
}

async function peer(args: string[]): Promise<void> {
  const [natsUrl, job, rankText, portText, roundsText] = args;
  const rank = Number(rankText);
  const port = Number(portText);
  const rounds = Number(roundsText);
  // Rank 1 listens before it joins the group: once the group is ready, rank 0 may connect.
  const listening = rank === 1 ? await tcpReceiver(port) : undefined;
  const transport = await connectNats({ url: natsUrl, name: `${job} rank ${rank}` });
  const bus = new Bus({ jobId: job, transport });
  const group = new ProcessGroup({ bus, name: 'p2p', ranks: [0, 1], rank });
  try {
    await group.ready();
    const payload = Float32Array.from({ length: TENSOR_ELEMENTS }, (_, i) => i % 977);
    // One untimed round first: connections, buffers and code warm up.
    const natsMs: number[] = [];
    let natsCpu = process.cpuUsage();
    let gcMs = 0;
    const gc = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) gcMs += entry.duration;
    });
    for (let round = 0; round <= rounds; round++) {
      await group.barrier();
      if (round === 1) {
        natsCpu = process.cpuUsage();
        gc.observe({ entryTypes: ['gc'] });
      }
      const ms = await timedRound(group, rank, payload, `round ${round}`);
      if (round > 0) natsMs.push(ms);
    }
    const natsCpuMs = cpuMs(process.cpuUsage(natsCpu));
    // Entries are delivered asynchronously: let the last ones in before counting.
    await new Promise((resolve) => setImmediate(resolve));
    gc.disconnect();
    // Raw TCP and the data plane round by round, alternated, so the machine's drift hits both alike.
    const tcpMs: number[] = [];
    const directMs: number[] = [];
    const socket = rank === 0 ? await tcpConnect(port) : undefined;
    const bytes = new Uint8Array(payload.buffer);
    const plane = await DataPlane.listen({ bus, jobId: job, rank, key: createHash('sha256').update(job).digest(), host: '127.0.0.1', log: (line) => process.stderr.write(`${line}\n`) });
    const direct = new ProcessGroup({ bus, name: 'p2p-direct', ranks: [0, 1], rank, dataPlane: plane });
    try {
      await direct.ready();
      for (let round = 0; round <= rounds; round++) {
        await group.barrier();
        if (rank === 0) {
          const start = performance.now();
          const acknowledged = new Promise((resolve) => socket!.once('data', resolve));
          const header = Buffer.alloc(4);
          header.writeUInt32LE(bytes.byteLength);
          for (let i = 0; i < PER_ROUND; i++) {
            socket!.write(header);
            socket!.write(bytes);
          }
          await acknowledged;
          if (round > 0) tcpMs.push(performance.now() - start);
        }
        await group.barrier();
        const ms = await timedRound(direct, rank, payload, `round ${round} over the data plane`);
        if (round > 0) directMs.push(ms);
      }
      if (plane.stats.sent === 0 && plane.stats.received === 0) throw new Error('nothing went over the data plane');
      await group.barrier();
    } finally {
      socket?.destroy();
      listening?.close();
      direct.close();
      await plane.close();
    }
    // CPU per megabyte moved, this rank's side (barriers included, a small part): less at the mercy of a busy machine than wall time.
    const megabytes = (rounds * PER_ROUND * TENSOR_BYTES) / 1e6;
    const natsCpuMsPerMb = natsCpuMs / megabytes;
    const natsGcMsPerMb = gcMs / megabytes;
    const maxPayload = transport.maxPayload;
    process.stdout.write(JSON.stringify(rank === 0 ? { natsMs, tcpMs, directMs, natsCpuMsPerMb, natsGcMsPerMb, maxPayload } : { natsCpuMsPerMb, natsGcMsPerMb }) + '\n');
  } finally {
    group.close();
    await bus.close();
  }
}

/** PER_ROUND tensors rank 0 -> 1, up to rank 1's acknowledgement; milliseconds. */
async function timedRound(group: ProcessGroup, rank: number, payload: Float32Array, what: string): Promise<number> {
  const start = performance.now();
  if (rank === 0) {
    for (let i = 0; i < PER_ROUND; i++) group.send(1, 'tensor', payload, [TENSOR_ELEMENTS]);
    await group.recv(1, 'ack');
  } else {
    for (let i = 0; i < PER_ROUND; i++) {
      const { values } = await group.recv(0, 'tensor');
      if (values.length !== TENSOR_ELEMENTS || values[1000] !== payload[1000]) throw new Error(`tensor ${i} of ${what} arrived wrong`);
    }
    group.send(0, 'ack', Float32Array.of(1));
  }
  return performance.now() - start;
}

function cpuMs(usage: NodeJS.CpuUsage): number {
  return (usage.user + usage.system) / 1000;
}

/** User + system CPU milliseconds of another process, from /proc (Linux); undefined elsewhere or when it cannot be read. */
function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis): utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

function tcpConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.setNoDelay(true);
    socket.once('error', reject);
  });
}

/** Reads length-prefixed messages, each copied into one buffer as its pieces arrive; answers one byte per PER_ROUND messages. */
function tcpReceiver(port: number): Promise<{ close(): void }> {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    let message: Uint8Array | undefined;
    let filled = 0;
    let header = Buffer.alloc(0);
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      let offset = 0;
      while (offset < chunk.byteLength) {
        if (message === undefined) {
          const need = 4 - header.byteLength;
          header = Buffer.concat([header, chunk.subarray(offset, offset + need)]);
          offset += Math.min(need, chunk.byteLength - offset);
          if (header.byteLength < 4) return;
          message = new Uint8Array(header.readUInt32LE(0));
          filled = 0;
          header = Buffer.alloc(0);
        }
        const take = Math.min(message.byteLength - filled, chunk.byteLength - offset);
        message.set(chunk.subarray(offset, offset + take), filled);
        filled += take;
        offset += take;
        if (filled === message.byteLength) {
          message = undefined;
          if (++received % PER_ROUND === 0) socket.write(Buffer.of(1));
        }
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve({ close: () => server.close() }));
  });
}

if (process.argv[2] === '--peer') await peer(process.argv.slice(3));
