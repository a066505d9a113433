/**
 * Base of every error ambit raises on purpose. `code` is a stable, machine-readable reason (used as a metric label
 * and in logs); `cause` keeps the underlying error so nothing is lost when it is wrapped.
 */
export class AmbitError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
