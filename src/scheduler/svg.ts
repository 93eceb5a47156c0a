/**
 * Implements: an SVG timeline of a schedule: stages as rows, one box per op at its simulated time
 * (backward twice as long as forward, as timeline.ts assumes; where the backward is split, B and W
 * half of it each), forwards, backwards and W's in three colours, each labelled with its micro-batch
 * (and chunk), a time axis and a legend. Self-contained markup, no scripts: any browser shows it.
 */
import { measureBubbles, theoreticalBubbleOf } from './measure.ts';
import { formatOp, splitsBackward, type OpKind, type Schedule } from './ops.ts';
import { DEFAULT_DURATIONS, durationOf, simulateTimeline, type OpDurations } from './timeline.ts';

const COLORS: Record<OpKind, string> = { F: '#4e79a7', B: '#f28e2b', W: '#59a14f' };
const ROW_HEIGHT = 30;
const BOX_HEIGHT = 22;
const LEFT = 70;
const TOP = 44;
const TARGET_WIDTH = 1400;

export function scheduleToSvg(schedule: Schedule, durations: OpDurations = DEFAULT_DURATIONS): string {
  const timeline = simulateTimeline(schedule, durations);
  if (!timeline.ok) throw new Error(`the ${schedule.kind} schedule stalls; run validateSchedule for the details`);
  const { events, makespan } = timeline;
  // Whole pixels per time unit, so boxes of equal ops look equal; at least 6 so every box is visible.
  const unit = Math.max(6, Math.min(40, Math.floor(TARGET_WIDTH / Math.max(1, makespan))));
  const width = LEFT + makespan * unit + 20;
  const height = TOP + schedule.stages * ROW_HEIGHT + 50;
  const bubble = measureBubbles(events, schedule.stages);
  const meanBubble = bubble.reduce((sum, b) => sum + b.fraction, 0) / Math.max(1, bubble.length);
  const title =
    `${schedule.kind}: ${schedule.stages} stages, ${schedule.microBatches} micro-batches, ${schedule.chunks} chunk${schedule.chunks === 1 ? '' : 's'}; ` +
    `bubble ${meanBubble.toFixed(3)} (theory ${theoreticalBubbleOf(schedule.kind, schedule.stages, schedule.microBatches, schedule.chunks).toFixed(3)})`;
  const split = schedule.ops.some((stageOps) => splitsBackward(stageOps));
  const names: Record<OpKind, string> = { F: 'forward', B: split ? 'backward-input' : 'backward', W: 'backward-weight' };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${LEFT}" y="20" font-size="14">${escapeXml(title)}</text>`,
  ];
  for (let stage = 0; stage < schedule.stages; stage++) {
    const y = TOP + stage * ROW_HEIGHT;
    parts.push(`<rect x="${LEFT}" y="${y}" width="${makespan * unit}" height="${BOX_HEIGHT}" fill="#f2f2f2"/>`);
    parts.push(`<text x="${LEFT - 8}" y="${y + BOX_HEIGHT / 2 + 4}" font-size="12" text-anchor="end">stage ${stage}</text>`);
  }
  const fontSize = Math.min(11, unit * 0.9);
  for (const event of events) {
    const x = LEFT + event.start * unit;
    const y = TOP + event.stage * ROW_HEIGHT;
    const boxWidth = (event.end - event.start) * unit;
    const label = formatOp(event).slice(1);
    parts.push(
      `<g><title>stage ${event.stage} ${names[event.kind]} micro-batch ${event.microBatch} chunk ${event.chunk}, t ${event.start}-${event.end}</title>` +
        `<rect x="${x}" y="${y}" width="${boxWidth}" height="${BOX_HEIGHT}" fill="${COLORS[event.kind]}" stroke="white" stroke-width="1"/>` +
        (label.length * fontSize * 0.62 <= boxWidth
          ? `<text x="${x + boxWidth / 2}" y="${y + BOX_HEIGHT / 2 + 4}" font-size="${fontSize}" fill="white" text-anchor="middle">${label}</text>`
          : '') +
        '</g>',
    );
  }
  const axisY = TOP + schedule.stages * ROW_HEIGHT + 4;
  const tickEvery = Math.max(1, Math.ceil(40 / unit));
  parts.push(`<line x1="${LEFT}" y1="${axisY}" x2="${LEFT + makespan * unit}" y2="${axisY}" stroke="#888"/>`);
  for (let t = 0; t <= makespan; t += tickEvery) {
    parts.push(`<text x="${LEFT + t * unit}" y="${axisY + 14}" font-size="10" text-anchor="middle" fill="#555">${t}</text>`);
  }
  const legendY = axisY + 32;
  const units = (kind: OpKind) => {
    const length = durationOf({ kind }, durations, split);
    return `${length} unit${length === 1 ? '' : 's'}`;
  };
  const legend: [OpKind, string][] = split
    ? [['F', `forward (${units('F')})`], ['B', `B: input gradient (${units('B')})`], ['W', `W: weight gradient (${units('W')}); labels: micro-batch[.chunk]`]]
    : [['F', `forward (${units('F')})`], ['B', `backward (${units('B')}); labels: micro-batch[.chunk]`]];
  legend.forEach(([kind, text], index) => {
    const x = LEFT + index * 170;
    parts.push(`<rect x="${x}" y="${legendY - 10}" width="12" height="12" fill="${COLORS[kind]}"/>`, `<text x="${x + 16}" y="${legendY}" font-size="12">${text}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
