import type { Change } from '../model/change.js';
import { attributesChanged, contentChanged, replaced } from '../model/entry.js';
import { isWithin, type RawPath } from '../model/path.js';
import type { Tree } from '../model/tree.js';

/**
 * The changes that turn `previous` into `current`, restricted to `scope` ('' for all), in
 * an order that applies cleanly: removals deepest-first, then creations parents-first,
 * then modifications. A directory removed implies its subtree, so only its top is listed.
 * Moves cannot be told from a diff and show as a removal and a creation.
 */
export function diff(previous: Tree, current: Tree, scope: RawPath = ''): Change[] {
  const removed: Change[] = [];
  const created: Change[] = [];
  const changed: Change[] = [];
  const gone = new Set<RawPath>();

  for (const p of previous.walk(scope)) {
    const old = previous.get(p);
    if (old === undefined) continue;
    const cur = current.get(p);
    if (cur !== undefined && !replaced(old, cur)) continue;
    gone.add(p);
  }
  // Only the top of each removed subtree: a removed directory implies what was inside.
  for (const p of gone) {
    let q = p;
    let covered = false;
    while (q !== scope && q !== '') {
      q = q.includes('/') ? q.slice(0, q.lastIndexOf('/')) : '';
      if (gone.has(q)) {
        covered = true;
        break;
      }
    }
    if (!covered) removed.push({ type: 'removed', path: p, kind: (previous.get(p) ?? { kind: 'other' }).kind });
  }
  removed.sort((a, b) => b.path.length - a.path.length);

  for (const p of current.walk(scope)) {
    const cur = current.get(p);
    if (cur === undefined || !isWithin(p, scope)) continue;
    const old = previous.get(p);
    if (old === undefined || gone.has(p)) {
      created.push({ type: 'created', path: p, kind: cur.kind });
    } else if (contentChanged(old, cur)) {
      changed.push({ type: 'modified', path: p, kind: cur.kind, closed: true });
    } else if (attributesChanged(old, cur)) {
      changed.push({ type: 'attributes', path: p, kind: cur.kind });
    }
  }
  // walk() lists parents before children, so creations apply in order.
  return [...removed, ...created, ...changed];
}
