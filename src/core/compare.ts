// Ordering for deterministic output. Pure.
//
// Not String.prototype.localeCompare: its first call loads ICU's collation data, ~3 MB of the node binary's pages
// resident for the rest of the daemon's life (docs/performance.md), to order MACs, link names and addresses, which
// are ASCII and only need an order that is the same on every run.

/** Code-unit order of two strings: -1, 0 or 1. */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
