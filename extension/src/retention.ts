/**
 * Retention of accepted completions: how much of an accepted completion is
 * still in the document 30 s and 2 min later (what GitHub calls "accepted and
 * retained" characters: code deleted a minute later did not help).
 *
 * Each accepted completion's characters are followed through every later
 * edit of its document as a list of ranges (`InsertedText`): an edit inside
 * the inserted text removes the characters it replaced (typed characters are
 * not the completion's), edits before it move it. At each checkpoint the
 * tracker reports counts only: the completion's id, its language, the
 * checkpoint, and how many of its characters survive. No text leaves this
 * module. The clock is injected so the logic is tested without waiting.
 */

/** Seconds after acceptance when the inserted text is checked again. */
export const CHECKPOINTS_S: readonly number[] = [30, 120];
/** Completions followed at once; past it the oldest is dropped (never reported). */
export const MAX_TRACKED = 200;

/** One content change as VS Code reports it (offsets in UTF-16 code units). */
export interface Change {
  rangeOffset: number;
  rangeLength: number;
  text: string;
}

export interface RetentionReport {
  id: string | number;
  languageId: string;
  afterS: number;
  /** characters the completion inserted */
  chars: number;
  /** of those, still in the document */
  retainedChars: number;
}

/** The characters of one inserted text, followed through edits (see the module doc). */
export class InsertedText {
  private segments: Array<[number, number]>;

  constructor(
    start: number,
    readonly length: number,
  ) {
    this.segments = length > 0 ? [[start, start + length]] : [];
  }

  /** [offset, offset + removed) was replaced by `added` characters. */
  edit(offset: number, removed: number, added: number): void {
    const end = offset + removed;
    const delta = added - removed;
    const next: Array<[number, number]> = [];
    for (const [start, stop] of this.segments) {
      if (stop <= offset) {
        next.push([start, stop]); // before the edit (an insertion right after it too)
      } else if (start >= end) {
        next.push([start + delta, stop + delta]); // after it: moved
      } else {
        if (start < offset) {
          next.push([start, offset]);
        }
        if (stop > end) {
          next.push([end + delta, stop + delta]);
        }
      }
    }
    this.segments = next.filter(([start, stop]) => stop > start);
  }

  /** Characters of the inserted text still in the document. */
  retained(): number {
    return this.segments.reduce((sum, [start, stop]) => sum + stop - start, 0);
  }
}

interface Tracked {
  id: string | number;
  languageId: string;
  uri: string;
  text: InsertedText;
  timers: unknown[];
  left: number;
}

type Schedule = (callback: () => void, ms: number) => unknown;
type Cancel = (handle: unknown) => void;

/** Follows accepted completions and reports them at each checkpoint. */
export class RetentionTracker {
  private readonly tracked: Tracked[] = [];

  constructor(
    private readonly report: (report: RetentionReport) => void,
    private readonly schedule: Schedule = (callback, ms) => setTimeout(callback, ms),
    private readonly cancel: Cancel = (handle) => {
      clearTimeout(handle as ReturnType<typeof setTimeout>);
    },
    private readonly checkpoints: readonly number[] = CHECKPOINTS_S,
  ) {}

  /** An accepted completion: `length` characters inserted at `start` in `uri`. */
  track(id: string | number, languageId: string, uri: string, start: number, length: number): void {
    if (length <= 0) {
      return;
    }
    const item: Tracked = {
      id,
      languageId,
      uri,
      text: new InsertedText(start, length),
      timers: [],
      left: this.checkpoints.length,
    };
    item.timers = this.checkpoints.map((seconds) =>
      this.schedule(() => {
        this.check(item, seconds);
      }, seconds * 1000),
    );
    this.tracked.push(item);
    while (this.tracked.length > MAX_TRACKED) {
      const oldest = this.tracked.shift();
      oldest?.timers.forEach((timer) => {
        this.cancel(timer);
      });
    }
  }

  /** A document changed: apply its changes, in order, to what is followed in it. */
  changed(uri: string, changes: readonly Change[]): void {
    for (const item of this.tracked) {
      if (item.uri !== uri) {
        continue;
      }
      for (const change of changes) {
        item.text.edit(change.rangeOffset, change.rangeLength, change.text.length);
      }
    }
  }

  /** How many are followed now (for tests and the logs). */
  size(): number {
    return this.tracked.length;
  }

  dispose(): void {
    for (const item of this.tracked.splice(0)) {
      item.timers.forEach((timer) => {
        this.cancel(timer);
      });
    }
  }

  private check(item: Tracked, seconds: number): void {
    this.report({
      id: item.id,
      languageId: item.languageId,
      afterS: seconds,
      chars: item.text.length,
      retainedChars: item.text.retained(),
    });
    item.left -= 1;
    if (item.left === 0) {
      const index = this.tracked.indexOf(item);
      if (index >= 0) {
        this.tracked.splice(index, 1);
      }
    }
  }
}
