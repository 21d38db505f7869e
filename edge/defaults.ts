/** Defaults of `edge serve` its help shows: apart from the modules that use them, so `--help` loads none of those. */

/** Upstream fetches in flight at most; more misses wait, holding no body. */
export const DEFAULT_UPSTREAM_CONCURRENCY = 32;
