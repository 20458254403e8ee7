// Errors of the IMDS client and the snapshot reader. Every error names the IMDS path it concerns, so a log line
// says which key failed and how; callers keep their last good snapshot on any of them.

/** What went wrong, for callers that react differently (e.g. metrics); the message says the same in words. */
export type ImdsErrorKind =
  /** A non-2xx answer that is not 404 (404 is "absent", not an error). */
  | 'http'
  /** No complete answer within timeoutMs. */
  | 'timeout'
  /** Connection refused/reset, DNS, socket errors. */
  | 'network'
  /** The body grew past maxBodyBytes. */
  | 'too-large'
  /** The body is not UTF-8 text. */
  | 'encoding'
  /** The answer arrived but its value is not acceptable (see ImdsValidationError). */
  | 'validation';

export interface ImdsErrorDetails {
  kind: ImdsErrorKind;
  method?: 'GET' | 'PUT';
  status?: number;
  attempts?: number;
  cause?: unknown;
}

export class ImdsError extends Error {
  override name = 'ImdsError';
  /** Full request path, e.g. /latest/meta-data/mac. */
  readonly path: string;
  readonly kind: ImdsErrorKind;
  readonly status: number | undefined;
  readonly attempts: number | undefined;

  constructor(path: string, message: string, details: ImdsErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.path = path;
    this.kind = details.kind;
    this.status = details.status;
    this.attempts = details.attempts;
  }
}

/** A value IMDS returned that must not reach the planner (bad syntax, out of range, outside its subnet, ...). */
export class ImdsValidationError extends ImdsError {
  override name = 'ImdsValidationError';
  /** The offending value, truncated (see describeValue). */
  readonly value: string;

  constructor(path: string, problem: string, value: string) {
    super(path, `IMDS ${path}: ${problem}: ${describeValue(value)}`, { kind: 'validation' });
    this.value = value.length > VALUE_PREVIEW ? value.slice(0, VALUE_PREVIEW) : value;
  }
}

const VALUE_PREVIEW = 64;

/**
 * A value as it may appear in a log line: JSON-escaped (control characters, quotes and newlines cannot forge
 * log lines), cut to 64 characters, with the full length when it was cut.
 */
export function describeValue(value: string): string {
  if (value.length <= VALUE_PREVIEW) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, VALUE_PREVIEW))}... (${value.length} characters)`;
}
