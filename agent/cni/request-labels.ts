/**
 * The labels a CNI request is counted under (ambit_cni_requests_total{command,result}). Pure. Both are closed sets:
 * an agent's answer carries enrollment reasons (namespace and rule errors) that must not each become a series, and
 * a malformed request has no command of its own.
 */
import type { CniAgentAnswer, CniAgentCommand, CniAgentRequest } from "./protocol.js";

/** A request's command, or `invalid` for a line that is not a request. */
export type CniCommandLabel = CniAgentCommand | "invalid";

/**
 * `enrolled`: rules and listeners in place (ADD), or the pod is enrolled in that sandbox (CHECK). `not_meshed`: the pod
 * is outside the mesh. `removed`: DEL done. `pod_unknown`: the pod's record did not come in time (the kubelet retries).
 * `not_enrolled`: CHECK of a meshed pod not enrolled in that sandbox. `failed`: the rules or listeners could not be put
 * in place (the log line says why; ambit_enrollment_failures_total{reason} counts the reasons). `bad_request`: not a
 * request, or one that cannot be served (a meshed sandbox without addresses).
 */
export type CniResultLabel =
  | "enrolled"
  | "not_meshed"
  | "removed"
  | "pod_unknown"
  | "not_enrolled"
  | "failed"
  | "bad_request";

export function cniRequestLabels(
  request: CniAgentRequest | { invalid: string },
  answer: CniAgentAnswer,
): { command: CniCommandLabel; result: CniResultLabel } {
  if ("invalid" in request) return { command: "invalid", result: "bad_request" };
  const command = request.command;
  if ("result" in answer) return { command, result: answer.result };
  switch (answer.error.code) {
    case "pod_unknown":
      return { command, result: "pod_unknown" };
    case "bad_request":
    case "no_ips":
      return { command, result: "bad_request" };
    case "not_enrolled":
      // From CHECK, the answer itself; from ADD, enrollment left the pod without its rules: a failure.
      return { command, result: command === "check" ? "not_enrolled" : "failed" };
    default:
      return { command, result: "failed" };
  }
}
