import { defineConfig } from 'vitest/config';

// Kernel-backed tests create namespaces with per-file prefixes, so files may run in parallel;
// two workers match the 2-core machines this runs on.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
