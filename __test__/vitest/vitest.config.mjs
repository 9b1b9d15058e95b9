// Vitest's parallel workers (forked processes) serialise access to one shared file.
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    root: import.meta.dirname,
    include: ['*.vitest.mjs'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 3, minForks: 3 } },
    fileParallelism: true,
    globalSetup: ['./setup.mjs'],
    testTimeout: 60_000,
  },
})
