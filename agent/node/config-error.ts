import { AmbitError } from "../errors.js";

export class ConfigError extends AmbitError {
  constructor(message: string) {
    super("bad_config", message);
  }
}
