import { AmbitError } from "../errors.js";

/** A connection the proxy could not carry; `code` is the reason counted in metrics and logged. */
export class ProxyError extends AmbitError {}
