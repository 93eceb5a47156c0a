/**
 * Implements: TensorBoard's event file format: the Event, Summary, Value and SessionLog messages of TensorFlow's
 * `event.proto` and `summary.proto` (only the fields a scalar needs), and the TFRecord framing around
 * each (uint64 LE length, masked CRC32C of the length, data, masked CRC32C of the data), both ways:
 * encoding for the writer (hooks/tensorboard.ts), reading back with every CRC checked for tests and tools.
 */
import { crc32c } from '@aws-crypto/crc32c';
import protobuf from 'protobufjs';

/** Field numbers as in tensorflow/core/util/event.proto and framework/summary.proto. */
const root = protobuf.Root.fromJSON({
  nested: {
    tensorflow: {
      nested: {
        Event: {
          fields: {
            wallTime: { type: 'double', id: 1 },
            step: { type: 'int64', id: 2 },
            fileVersion: { type: 'string', id: 3 },
            summary: { type: 'Summary', id: 5 },
            sessionLog: { type: 'SessionLog', id: 7 },
          },
        },
        SessionLog: { fields: { status: { type: 'int32', id: 1 } } },
        Summary: {
          fields: { value: { rule: 'repeated', type: 'Value', id: 1 } },
          nested: {
            Value: {
              fields: {
                tag: { type: 'string', id: 1 },
                simpleValue: { type: 'float', id: 2 },
              },
            },
          },
        },
      },
    },
  },
});
const EventType = root.lookupType('tensorflow.Event');

/** The first event of every file: TensorBoard reads the file as this version of the format. */
export const FILE_VERSION = 'brain.Event:2';

export interface ScalarValue {
  tag: string;
  value: number;
}

export interface TensorBoardEvent {
  /** Seconds since the epoch. */
  wallTime: number;
  step: number;
  fileVersion?: string;
  /**
   * A SessionLog START: TensorBoard drops what it read of this step and later ones, as the
   * steps a run trains again after its checkpoint replace those of the branch it abandoned.
   */
  start?: boolean;
  scalars: ScalarValue[];
}

/** SessionLog.SessionStatus.START. */
const SESSION_START = 1;

/** TFRecord's mask: a CRC stored next to data that holds CRCs would otherwise be weak (tensorflow/core/lib/hash/crc32c.h). */
export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = crc32c(bytes) >>> 0;
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: the length and its CRC come first so a reader can tell a torn tail from a bad length. */
export function frameRecord(data: Uint8Array): Buffer {
  const record = Buffer.alloc(12 + data.length + 4);
  record.writeBigUInt64LE(BigInt(data.length), 0);
  record.writeUInt32LE(maskedCrc32c(record.subarray(0, 8)), 8);
  record.set(data, 12);
  record.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return record;
}

export function encodeEvent(event: TensorBoardEvent): Uint8Array {
  const message = {
    wallTime: event.wallTime,
    step: event.step,
    ...(event.fileVersion === undefined ? {} : { fileVersion: event.fileVersion }),
    ...(event.start === true ? { sessionLog: { status: SESSION_START } } : {}),
    ...(event.scalars.length === 0 ? {} : { summary: { value: event.scalars.map(({ tag, value }) => ({ tag, simpleValue: value })) } }),
  };
  return EventType.encode(EventType.fromObject(message)).finish();
}

export function decodeEvent(data: Uint8Array): TensorBoardEvent {
  const object = EventType.toObject(EventType.decode(data), { longs: Number, defaults: true }) as {
    wallTime: number;
    step: number;
    fileVersion: string;
    sessionLog?: { status: number };
    summary?: { value?: { tag: string; simpleValue: number }[] };
  };
  return {
    wallTime: object.wallTime,
    step: object.step,
    ...(object.fileVersion === '' ? {} : { fileVersion: object.fileVersion }),
    ...(object.sessionLog?.status === SESSION_START ? { start: true } : {}),
    scalars: (object.summary?.value ?? []).map(({ tag, simpleValue }) => ({ tag, value: simpleValue })),
  };
}

/** The data of every record in `bytes`; throws at the first bad CRC or torn record, naming its offset. */
export function readRecords(bytes: Uint8Array): Uint8Array[] {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: Uint8Array[] = [];
  let offset = 0;
  while (offset < buffer.length) {
    if (offset + 12 > buffer.length) throw new Error(`tfevents: torn record header at byte ${offset} of ${buffer.length}`);
    if (buffer.readUInt32LE(offset + 8) !== maskedCrc32c(buffer.subarray(offset, offset + 8))) {
      throw new Error(`tfevents: length CRC mismatch in the record at byte ${offset}`);
    }
    const length = Number(buffer.readBigUInt64LE(offset));
    const end = offset + 12 + length;
    if (end + 4 > buffer.length) throw new Error(`tfevents: record at byte ${offset} claims ${length} bytes; the file ends at ${buffer.length}`);
    const data = buffer.subarray(offset + 12, end);
    if (buffer.readUInt32LE(end) !== maskedCrc32c(data)) throw new Error(`tfevents: data CRC mismatch in the record at byte ${offset}`);
    records.push(data);
    offset = end + 4;
  }
  return records;
}

export function readEvents(bytes: Uint8Array): TensorBoardEvent[] {
  return readRecords(bytes).map(decodeEvent);
}
