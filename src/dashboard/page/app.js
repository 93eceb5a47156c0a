// The live job page: polls /api/state once a second and redraws; the buttons post the control messages
// `gpt-hybrid ctl` sends. Plain script (no build step): Chart.js is loaded before it as a global.
'use strict';

const token = new URLSearchParams(location.search).get('token');
const api = (path) => (token === null ? path : `${path}${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`);
const $ = (id) => document.getElementById(id);

const COLORS = {
  forward: '#3b82f6',
  backward: '#ef4444',
  'backward input': '#f97316',
  'backward weight': '#a855f7',
  send: '#10b981',
  receive: '#14b8a6',
  'all-reduce': '#eab308',
  other: '#9ca3af',
};

function lineChart(canvas, datasets, yTitle) {
  return new Chart(canvas, {
    type: 'line',
    data: { datasets: datasets.map((d) => ({ pointRadius: 0, borderWidth: 2, data: [], ...d })) },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      scales: { x: { type: 'linear', title: { display: true, text: 'step' } }, y: { title: { display: true, text: yTitle } } },
      plugins: { legend: { display: datasets.length > 1 } },
    },
  });
}

const charts = {
  loss: lineChart($('loss-chart'), [{ label: 'loss', borderColor: '#2563eb' }, { label: 'validation loss', borderColor: '#dc2626', borderDash: [6, 4], pointRadius: 3 }], 'loss'),
  lr: lineChart($('lr-chart'), [{ label: 'lr', borderColor: '#7c3aed' }], 'lr'),
  throughput: lineChart($('throughput-chart'), [{ label: 'tokens/s', borderColor: '#059669' }], 'tokens/s'),
  timeline: new Chart($('timeline-chart'), {
    type: 'bar',
    data: { labels: [], datasets: [] },
    options: {
      indexAxis: 'y',
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { type: 'linear', title: { display: true, text: 'ms' } }, y: { stacked: true } },
      plugins: { tooltip: { callbacks: { label: (item) => item.raw.label } } },
    },
  }),
};

let received = 0;

function kindOf(slice) {
  if (slice.cat === 'compute') return COLORS[slice.kind] === undefined ? 'other' : slice.kind;
  if (slice.name.startsWith('send')) return 'send';
  if (slice.name.startsWith('receive')) return 'receive';
  if (slice.name.startsWith('all-reduce')) return 'all-reduce';
  return 'other';
}

function drawTimeline(slices, world) {
  const labels = Array.from({ length: world }, (_, rank) => `rank ${rank}`);
  const byKind = new Map();
  for (const slice of slices) {
    const kind = kindOf(slice);
    if (!byKind.has(kind)) byKind.set(kind, []);
    byKind.get(kind).push({ x: [slice.startMs, slice.startMs + Math.max(slice.durMs, 0.05)], y: `rank ${slice.rank}`, label: `${slice.name} (step ${slice.step}): ${slice.durMs.toFixed(1)} ms` });
  }
  charts.timeline.data.labels = labels;
  charts.timeline.data.datasets = [...byKind].map(([kind, data]) => ({ label: kind, data, backgroundColor: COLORS[kind], grouped: false, barPercentage: 0.8 }));
  charts.timeline.update();
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.appendChild(td);
}

function drawRanks(status, coordinates) {
  const body = $('ranks').querySelector('tbody');
  body.replaceChildren();
  for (const rank of status.ranks) {
    const row = document.createElement('tr');
    row.dataset.rank = String(rank.rank);
    const at = coordinates[rank.rank] ?? {};
    for (const text of [rank.rank, rank.node ?? '-', rank.pid ?? '-', at.dp, at.pp, at.tp, rank.state, rank.step, rank.stepMs ?? '-', rank.lastSeenMs < 0 ? 'not yet' : `${(rank.lastSeenMs / 1000).toFixed(1)} s ago`, rank.rssMb === undefined ? '-' : `${rank.rssMb} MiB`]) cell(row, String(text));
    body.appendChild(row);
  }
  const actors = $('actors').querySelector('tbody');
  actors.replaceChildren();
  for (const actor of status.actors) {
    const row = document.createElement('tr');
    for (const text of [actor.kind, actor.rank, actor.state, actor.mailbox, actor.lastAction]) cell(row, String(text));
    actors.appendChild(row);
  }
}

function drawSummary(state) {
  const { job, status } = state;
  $('job').textContent = `job ${job.jobId} · ${job.layout}`;
  const stateName = 'error' in status ? 'unreachable' : status.state;
  $('state').textContent = stateName;
  $('state').className = stateName;
  document.body.dataset.state = stateName;
  if ('error' in status) {
    $('message').textContent = status.error;
    return;
  }
  $('progress').textContent = `step ${status.step}/${status.totalSteps}`;
  $('loss').textContent = status.lastLoss === null ? '' : `loss ${status.lastLoss.toFixed(4)}`;
  $('throughput').textContent = status.tokensPerS === null ? '' : `${Math.round(status.tokensPerS)} tokens/s`;
  $('restarts').textContent = `${status.restarts ?? 0} restarts`;
  $('checkpoint').textContent = state.checkpoint === null ? 'no checkpoint yet' : `last checkpoint ${state.checkpoint}`;
  $('pause').disabled = status.state !== 'running';
  $('resume').disabled = status.state !== 'paused';
}

async function refresh() {
  try {
    const response = await fetch(api(`/api/state?since=${received}`));
    if (!response.ok) throw new Error(await response.text());
    const state = await response.json();
    // A relaunched launcher (or a rollback) starts its list again.
    if (state.stepCount < received) {
      received = 0;
      for (const chart of [charts.loss, charts.lr, charts.throughput]) for (const set of chart.data.datasets) set.data = [];
      return;
    }
    for (const point of state.steps) {
      charts.loss.data.datasets[0].data.push({ x: point.step, y: point.loss });
      charts.lr.data.datasets[0].data.push({ x: point.step, y: point.lr });
      charts.throughput.data.datasets[0].data.push({ x: point.step, y: point.tokensPerS });
    }
    received = state.stepCount;
    charts.loss.data.datasets[1].data = state.validation.map((v) => ({ x: v.step, y: v.loss }));
    for (const chart of [charts.loss, charts.lr, charts.throughput]) chart.update();
    $('loss-chart').dataset.points = String(charts.loss.data.datasets[0].data.length);
    drawSummary(state);
    if (!('error' in state.status)) drawRanks(state.status, state.job.coordinates);
    drawTimeline(state.timeline, state.job.coordinates.length);
    const log = $('log');
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = state.log.join('\n');
    if (atBottom) log.scrollTop = log.scrollHeight;
  } catch (error) {
    $('state').textContent = 'unreachable';
    $('state').className = 'unreachable';
    $('message').textContent = `the launcher does not answer (${error.message}); the job may have ended`;
  } finally {
    setTimeout(refresh, 1000);
  }
}

async function send(command) {
  $('message').textContent = `${command}...`;
  try {
    const response = await fetch(api(`/api/control/${command}`), { method: 'POST', headers: { 'X-Gpt-Hybrid': '1' } });
    const answer = await response.json();
    $('message').textContent = answer.message;
  } catch (error) {
    $('message').textContent = `${command} failed: ${error.message}`;
  }
}

$('pause').addEventListener('click', () => send('pause'));
$('resume').addEventListener('click', () => send('resume'));
$('checkpoint-now').addEventListener('click', () => send('checkpoint'));
$('stop').addEventListener('click', () => {
  if (confirm('Stop the job after the step in flight?')) send('stop');
});
refresh();
