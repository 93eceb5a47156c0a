/**
 * Implements: `gpt-hybrid schedule`: builds and validates a pipeline schedule, prints it as a time
 * chart (or as JSON with --json) and, with --svg FILE, writes its timeline as an SVG drawing.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { formatSchedule } from '../scheduler/format.ts';
import { buildSchedule, scheduleToJson, validateSchedule } from '../scheduler/schedules.ts';
import { scheduleToSvg } from '../scheduler/svg.ts';
import type { ScheduleCommand } from './schedule-args.ts';

export function runSchedule(command: ScheduleCommand, out: (text: string) => void = (text) => process.stdout.write(text), err: (text: string) => void = (text) => process.stderr.write(text)): number {
  const schedule = validateSchedule(buildSchedule(command.kind, command.stages, command.microBatches, command.chunks));
  out(command.json ? `${JSON.stringify(scheduleToJson(schedule))}\n` : `${formatSchedule(schedule)}\n`);
  if (command.svg !== undefined) {
    const path = resolve(command.svg);
    try {
      writeFileSync(path, scheduleToSvg(schedule));
    } catch (error) {
      throw new Error(`cannot write the SVG timeline to ${path}: ${(error as Error).message}; check that the folder exists and is writable`);
    }
    // With --json, stdout carries only the JSON.
    (command.json ? err : out)(`wrote the timeline to ${path}\n`);
  }
  return 0;
}
