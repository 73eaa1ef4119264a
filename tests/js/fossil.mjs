// Cross-checks edgerelay's Fossil delta code with the npm fossil-delta
// package (an implementation nobody here wrote). Run by the Go test
// TestInteropNodeFossilDelta: one JSON object per stdin line,
//   {"source": b64, "target": b64, "patch": b64 (ours)}
// answered by one line each:
//   {"applied": b64 (our patch applied by fossil-delta), "theirs": b64 (fossil-delta's patch)}
import { applyDelta, createDelta } from 'fossil-delta';
import { createInterface } from 'node:readline';

const b = (s) => new Uint8Array(Buffer.from(s ?? '', 'base64')); // Go encodes empty as null
const s = (u) => Buffer.from(u).toString('base64');
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const c = JSON.parse(line);
  let applied = null, error = null;
  try {
    applied = s(applyDelta(b(c.source), b(c.patch), { verifyChecksum: true }));
  } catch (e) {
    error = String(e);
  }
  process.stdout.write(JSON.stringify({ applied, error, theirs: s(createDelta(b(c.source), b(c.target))) }) + '\n');
}
