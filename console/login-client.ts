import type { ConsoleLoginToken } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { errorMessage } from '../common/http.ts';

/** Asks a running console for a one-time login URL, with the cluster's admin token (which only the CLI and the console hold). */
export async function mintLoginUrl(consoleUrl: string, adminToken: string, timeoutMs = 3_000): Promise<ConsoleLoginToken> {
  let res: Response;
  try {
    res = await fetch(`${consoleUrl}/api/login-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const why = ((err as Error).cause as { code?: string } | undefined)?.code ?? (err as Error).message;
    throw new OcdnError(ErrorCodes.NOT_FOUND, `no console answers at ${consoleUrl}: ${why}`, { cause: (err as Error).cause ?? err });
  }
  const text = await res.text();
  if (res.status !== 201)
    throw new OcdnError(
      res.status === 401 ? ErrorCodes.UNAUTHORIZED : ErrorCodes.ORIGIN_UNAVAILABLE,
      `console at ${consoleUrl} answered ${res.status}: ${errorMessage(text)}`,
    );
  return JSON.parse(text) as ConsoleLoginToken;
}
