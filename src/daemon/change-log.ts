// The journal lines of a sync's writes. A small sync (a repair, a new IP, an ENI of a few IPs) says every change
// at info. A large one (the start at 15 ENIs × 50 IPs: ~1500 changes, a 50-IP ENI attached, a mass repair) says one
// info line per ENI and kind of change, with the count, and each change at trace: ~1500 journal lines cost the
// daemon 180–400 ms at start (docs/performance.md) and bury everything else. Failures and fights are logged
// elsewhere (src/daemon/failures.ts, fights) and unchanged by this.
import type { Change } from '../core/types';
import { formatChange } from '../core/format';
import type { Logger } from '../log';

/** Up to this many changes in one sync, each is its own info line. */
export const PER_CHANGE_LINES_MAX = 32;

type Fields = Record<string, string | number>;

/** `${fam} ${kind} ${verb}` of a change: the `ip` command without its object ("ip -6 rule add"). */
export function changeVerb(change: Change): string {
  if (change.op === 'link-up') return 'ip link set up';
  const text = formatChange(change);
  const words = text.split(' ');
  return words.slice(0, words[1] === '-6' ? 4 : 3).join(' ');
}

export interface ChangeGroup {
  fields: Fields;
  verb: string;
  count: number;
}

/** The changes grouped by their journal fields (ENI, interface, table) and verb, in the order first seen. Pure. */
export function groupChanges(changes: readonly Change[], fieldsOf: (c: Change) => Fields): ChangeGroup[] {
  const groups = new Map<string, ChangeGroup>();
  for (const change of changes) {
    const fields = fieldsOf(change);
    const verb = changeVerb(change);
    const key = `${verb}\0${String(fields.eni ?? '')}\0${String(fields.iface ?? '')}\0${String(fields.table ?? '')}`;
    const group = groups.get(key);
    if (group === undefined) groups.set(key, { fields, verb, count: 1 });
    else group.count += 1;
  }
  return [...groups.values()];
}

function where(fields: Fields): string {
  const parts = [fields.iface, fields.eni, fields.table === undefined ? undefined : `table ${String(fields.table)}`]
    .filter((p) => p !== undefined);
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`;
}

/**
 * Logs the changes a sync made. `quiet`: changes logged at debug only (repairs inside a fight: the fight's warning
 * says them).
 */
export function logChanges(log: Logger, done: readonly Change[], fieldsOf: (c: Change) => Fields, quiet: (c: Change) => boolean): void {
  const loud = done.filter((c) => !quiet(c));
  if (log.isLevelEnabled('debug')) for (const c of done) if (quiet(c)) log.debug(fieldsOf(c), formatChange(c));
  if (loud.length <= PER_CHANGE_LINES_MAX) {
    for (const c of loud) log.info(fieldsOf(c), formatChange(c));
    return;
  }
  for (const g of groupChanges(loud, fieldsOf)) {
    log.info({ ...g.fields, count: g.count }, `${g.count} × ${g.verb}${where(g.fields)}; each change at log level trace`);
  }
  if (log.isLevelEnabled('trace')) for (const c of loud) log.trace(fieldsOf(c), formatChange(c));
}
