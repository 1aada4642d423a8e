// Unit tests of retention tracking (extension/src/retention.ts), run by `npm test`.
import assert from "node:assert/strict";
import { test } from "node:test";
import { InsertedText, MAX_TRACKED, type RetentionReport, RetentionTracker } from "../../src/retention";

/** Apply edits to a string the way VS Code reports them, and to the tracked text. */
function edit(doc: string, text: InsertedText, offset: number, removed: number, added: string): string {
  text.edit(offset, removed, added.length);
  return doc.slice(0, offset) + added + doc.slice(offset + removed);
}

test("edits before, after and inside the inserted text", () => {
  // "x = " + inserted "foo(bar)" + "\n"
  let doc = "x = foo(bar)\n";
  const text = new InsertedText(4, 8);
  doc = edit(doc, text, 0, 0, "# c\n"); // before: moves it
  assert.equal(text.retained(), 8);
  doc = edit(doc, text, doc.length, 0, "y = 1\n"); // after: nothing
  assert.equal(text.retained(), 8);
  doc = edit(doc, text, 12, 0, "(typed)"); // inside: typed characters are not the completion's
  assert.equal(text.retained(), 8);
  doc = edit(doc, text, 12, 10, ""); // delete "(typed)bar"
  assert.equal(doc, "# c\nx = foo()\ny = 1\n");
  assert.equal(text.retained(), 5); // "foo()": the completion's 5 survivors
  edit(doc, text, 8, 5, "baz"); // replaced whole: nothing survives
  assert.equal(text.retained(), 0);
});

test("an insertion at either edge is not the completion's", () => {
  const text = new InsertedText(10, 4);
  text.edit(10, 0, 3); // right before
  text.edit(17, 0, 2); // right after
  assert.equal(text.retained(), 4);
  text.edit(15, 2, 0); // the last two of it (now at 13..17)
  assert.equal(text.retained(), 2);
});

test("reports counts at each checkpoint, then forgets", () => {
  const timers: Array<{ callback: () => void; ms: number }> = [];
  const reports: RetentionReport[] = [];
  const tracker = new RetentionTracker(
    (report) => reports.push(report),
    (callback, ms) => timers.push({ callback, ms }),
    () => undefined,
  );
  tracker.track("abc-1", "python", "file:///a.py", 4, 10);
  tracker.track("abc-2", "python", "file:///b.py", 0, 0); // nothing inserted: not followed
  assert.deepEqual(
    timers.map((t) => t.ms),
    [30_000, 120_000],
  );
  tracker.changed("file:///a.py", [{ rangeOffset: 6, rangeLength: 3, text: "" }]);
  tracker.changed("file:///other.py", [{ rangeOffset: 0, rangeLength: 100, text: "" }]);
  timers[0]?.callback();
  tracker.changed("file:///a.py", [{ rangeOffset: 0, rangeLength: 20, text: "rewritten" }]);
  timers[1]?.callback();
  assert.deepEqual(reports, [
    { id: "abc-1", languageId: "python", afterS: 30, chars: 10, retainedChars: 7 },
    { id: "abc-1", languageId: "python", afterS: 120, chars: 10, retainedChars: 0 },
  ]);
  assert.equal(tracker.size(), 0);
  for (const report of reports) {
    assert.deepEqual(Object.keys(report).sort(), ["afterS", "chars", "id", "languageId", "retainedChars"]);
  }
});

test("bounded: the oldest is dropped and its timers cancelled", () => {
  const cancelled: unknown[] = [];
  let next = 0;
  const tracker = new RetentionTracker(
    () => undefined,
    () => next++,
    (handle) => cancelled.push(handle),
  );
  for (let i = 0; i < MAX_TRACKED + 1; i++) {
    tracker.track(i, "go", "file:///x.go", i, 1);
  }
  assert.equal(tracker.size(), MAX_TRACKED);
  assert.deepEqual(cancelled, [0, 1]);
  tracker.dispose();
  assert.equal(tracker.size(), 0);
});
