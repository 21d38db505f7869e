import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';

/** Debian's Chromium: what scripts/install-peers.sh installs and CI runs the browser tests with. */
export const CHROMIUM = '/usr/bin/chromium';

/**
 * Headless Chromium for the browser tests. A missing browser fails the test loudly (never a
 * skip): CI installs it, and a skipped browser test would pass for a console that does not load.
 */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run "bash scripts/install-peers.sh" (it installs chromium with apt-get)`);
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
}
