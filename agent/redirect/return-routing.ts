/**
 * Policy routing that sends a pod app's replies to the agent's transparent connections back to the agent: a rule
 * `fwmark RETURN_MARK/RETURN_MARK_MASK lookup RETURN_ROUTE_TABLE` and a route `local default dev lo` in that table,
 * per family, as rtnetlink messages (no `ip` process per pod). Pure: the messages, the order they go in, and the
 * reading of the kernel's answer; return-routing-apply.ts sends them.
 */
import { constants } from "node:os";
import { AmbitError } from "../errors.js";
import { RETURN_MARK, RETURN_MARK_MASK, RETURN_ROUTE_TABLE, RETURN_RULE_PRIORITY } from "./ports.js";

// linux/netlink.h, linux/rtnetlink.h, linux/fib_rules.h
const NLMSG_HDRLEN = 16;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
/** In an NLMSG_ERROR: the echoed request is its header only (NETLINK_CAP_ACK). */
const NLM_F_CAPPED = 0x100;
/** In an NLMSG_ERROR: extended-ack attributes follow the echoed request (NETLINK_EXT_ACK). */
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;
const RTM_NEWROUTE = 24;
const RTM_DELROUTE = 25;
const RTM_NEWRULE = 32;
const RTM_DELRULE = 33;
const AF_INET = 2;
const AF_INET6 = 10;
/** Header table "unspecified": the table is in a 32-bit attribute instead, so any table id fits. */
const RT_TABLE_UNSPEC = 0;
const FR_ACT_TO_TBL = 1;
const FRA_PRIORITY = 6;
const FRA_FWMARK = 10;
const FRA_TABLE = 15;
const FRA_FWMASK = 16;
const RTA_OIF = 4;
const RTA_TABLE = 15;
const RTN_LOCAL = 2;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_HOST = 254;
/** What `ip route add` sets: a route configured by hand, shown without a `proto` by iproute2. */
const RTPROT_BOOT = 3;
/**
 * The kernel gives the loopback device this index in every namespace (LOOPBACK_IFINDEX, include/net/
 * net_namespace.h), so the route names lo without a lookup per pod and whatever lo is called.
 */
const LOOPBACK_IFINDEX = 1;

const { EEXIST, ENOENT, ESRCH, EACCES, EAFNOSUPPORT, EOPNOTSUPP } = constants.errno;

/**
 * Errnos with which the kernel refuses a family it cannot route here: EACCES for IPv6 disabled on lo
 * (disable_ipv6=1, "IPv6 is disabled on nexthop device"); EAFNOSUPPORT (rules) and EOPNOTSUPP (routes) when the
 * kernel has no IPv6 at all (ipv6.disable=1).
 */
export const FAMILY_UNAVAILABLE_ERRNOS: readonly number[] = [EACCES, EAFNOSUPPORT, EOPNOTSUPP];
/** Removal answers for what is already gone: ENOENT (rule), ESRCH (route), or a family that cannot hold either. */
const GONE_ERRNOS: readonly number[] = [ENOENT, ESRCH, EAFNOSUPPORT, EOPNOTSUPP];

export type ReturnRoutingOp = "install" | "remove";

export interface ReturnRoutingRequest {
  family: 4 | 6;
  /** The request in `ip` terms, for errors and logs. */
  what: string;
  /** A complete netlink message; its sequence number (0) is the sender's to stamp. */
  message: Buffer;
  /** Errnos meaning the wanted state already holds: EEXIST for an add, gone for a removal. */
  tolerated: readonly number[];
  /** For an install request: the removal that takes back what it added. */
  undo?: ReturnRoutingRequest;
}

/**
 * The requests that install or remove return routing for `families`, in order. Install adds the rule before the
 * route: a rule whose table has no route is harmless (the lookup goes on to the main table), whereas a kernel
 * without IPv6 policy routing (no CONFIG_IPV6_MULTIPLE_TABLES) refuses the rule but would put the route in its
 * main table, making every IPv6 destination local. Removal goes in reverse. Both adds are CREATE|EXCL (as `ip rule
 * add` and `ip route add`): re-enrollment finds them with EEXIST instead of adding a duplicate rule, and an install
 * can tell what it added itself, which is what it takes back if it fails halfway.
 */
export function returnRoutingRequests(op: ReturnRoutingOp, families: ReadonlyArray<4 | 6>): ReturnRoutingRequest[] {
  return families.flatMap((family) =>
    op === "install"
      ? [
          { ...ruleRequest("install", family), undo: ruleRequest("remove", family) },
          { ...routeRequest("install", family), undo: routeRequest("remove", family) },
        ]
      : [routeRequest("remove", family), ruleRequest("remove", family)],
  );
}

function ruleRequest(op: ReturnRoutingOp, family: 4 | 6): ReturnRoutingRequest {
  const mark = `0x${RETURN_MARK.toString(16)}/0x${RETURN_MARK_MASK.toString(16)}`;
  return {
    family,
    what: `${op === "install" ? "add" : "remove"} IPv${family} rule fwmark ${mark} lookup ${RETURN_ROUTE_TABLE} pref ${RETURN_RULE_PRIORITY}`,
    message: ruleMessage(op, family),
    tolerated: op === "install" ? [EEXIST] : GONE_ERRNOS,
  };
}

function routeRequest(op: ReturnRoutingOp, family: 4 | 6): ReturnRoutingRequest {
  return {
    family,
    what: `${op === "install" ? "add" : "remove"} IPv${family} route local default dev lo table ${RETURN_ROUTE_TABLE}`,
    message: routeMessage(op, family),
    tolerated: op === "install" ? [EEXIST] : GONE_ERRNOS,
  };
}

/** RTM_NEWRULE / RTM_DELRULE: fib_rule_hdr, then FRA_PRIORITY, FRA_FWMARK, FRA_FWMASK, FRA_TABLE. */
export function ruleMessage(op: ReturnRoutingOp, family: 4 | 6): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt8(family === 4 ? AF_INET : AF_INET6, 0);
  header.writeUInt8(RT_TABLE_UNSPEC, 4);
  header.writeUInt8(FR_ACT_TO_TBL, 7);
  const body = Buffer.concat([
    header,
    u32Attr(FRA_PRIORITY, RETURN_RULE_PRIORITY),
    u32Attr(FRA_FWMARK, RETURN_MARK),
    u32Attr(FRA_FWMASK, RETURN_MARK_MASK),
    u32Attr(FRA_TABLE, RETURN_ROUTE_TABLE),
  ]);
  return op === "install"
    ? nlmsg(RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
    : nlmsg(RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK, body);
}

/**
 * RTM_NEWROUTE / RTM_DELROUTE of `local default dev lo`: rtmsg (dst_len 0 and no RTA_DST is the default route),
 * then RTA_OIF and RTA_TABLE. The removal names the same type, scope, protocol and device, so it only ever takes
 * away this route. IPv6 routes have no scope (the kernel reports universe), so IPv6 sends universe, as iproute2.
 */
export function routeMessage(op: ReturnRoutingOp, family: 4 | 6): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt8(family === 4 ? AF_INET : AF_INET6, 0);
  header.writeUInt8(RT_TABLE_UNSPEC, 4);
  header.writeUInt8(RTPROT_BOOT, 5);
  header.writeUInt8(family === 4 ? RT_SCOPE_HOST : RT_SCOPE_UNIVERSE, 6);
  header.writeUInt8(RTN_LOCAL, 7);
  const body = Buffer.concat([header, u32Attr(RTA_OIF, LOOPBACK_IFINDEX), u32Attr(RTA_TABLE, RETURN_ROUTE_TABLE)]);
  return op === "install"
    ? nlmsg(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
    : nlmsg(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, body);
}

/** Every body here is a multiple of 4 bytes, so no padding is needed between the parts. */
function nlmsg(type: number, flags: number, body: Buffer): Buffer {
  const header = Buffer.alloc(NLMSG_HDRLEN);
  header.writeUInt32LE(NLMSG_HDRLEN + body.length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(flags, 6);
  return Buffer.concat([header, body]);
}

function u32Attr(type: number, value: number): Buffer {
  const attr = Buffer.alloc(8);
  attr.writeUInt16LE(8, 0);
  attr.writeUInt16LE(type, 2);
  attr.writeUInt32LE(value, 4);
  return attr;
}

/** A copy of `message` carrying sequence number `seq`, which the kernel's answer repeats. */
export function withSequence(message: Buffer, seq: number): Buffer {
  const stamped = Buffer.from(message);
  stamped.writeUInt32LE(seq, 8);
  return stamped;
}

/** The kernel's answer did not have the shape of an answer to the request; nothing can be concluded from it. */
export class NetlinkAnswerError extends AmbitError {
  constructor(message: string) {
    super("netlink_answer_malformed", `malformed netlink answer: ${message}`);
  }
}

export interface NetlinkAck {
  /** 0 when the kernel did what was asked, else the errno it refused with. */
  errno: number;
  /** The kernel's own words for a refusal (extended ack), when it gave any. */
  detail?: string;
}

/**
 * Reads the kernel's answer to one request sent with NLM_F_ACK: one NLMSG_ERROR carrying 0 or minus an errno, the
 * request's header echoed (whole, or capped to its header), then extended-ack attributes if flagged. Every length
 * is checked against the bytes received; anything else throws NetlinkAnswerError.
 */
export function parseNetlinkAck(answer: Buffer, seq: number): NetlinkAck {
  if (answer.length < NLMSG_HDRLEN) throw new NetlinkAnswerError(`${answer.length} bytes, shorter than a header`);
  const length = answer.readUInt32LE(0);
  if (length < NLMSG_HDRLEN || length > answer.length) {
    throw new NetlinkAnswerError(`length ${length} in a ${answer.length}-byte answer`);
  }
  const type = answer.readUInt16LE(4);
  if (type !== NLMSG_ERROR) throw new NetlinkAnswerError(`type ${type}, not NLMSG_ERROR`);
  const answeredSeq = answer.readUInt32LE(8);
  if (answeredSeq !== seq) throw new NetlinkAnswerError(`sequence ${answeredSeq}, expected ${seq}`);
  const echoAt = NLMSG_HDRLEN + 4;
  if (length < echoAt + NLMSG_HDRLEN) throw new NetlinkAnswerError(`length ${length}, too short for an error`);
  const error = answer.readInt32LE(NLMSG_HDRLEN);
  if (error > 0) throw new NetlinkAnswerError(`error ${error}, not zero or minus an errno`);
  const flags = answer.readUInt16LE(6);
  const ack: NetlinkAck = { errno: Math.abs(error) };
  if (!(flags & NLM_F_ACK_TLVS)) return ack;
  const echoed = flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(answer.readUInt32LE(echoAt));
  if (echoed < NLMSG_HDRLEN || echoAt + echoed > length) {
    throw new NetlinkAnswerError(`echoed request of ${echoed} bytes in a ${length}-byte answer`);
  }
  const detail = extendedAckMessage(answer.subarray(echoAt + echoed, length));
  return detail === undefined ? ack : { ...ack, detail };
}

/** NLMSGERR_ATTR_MSG among the extended-ack attributes, each bounded by what was received. */
function extendedAckMessage(attrs: Buffer): string | undefined {
  let detail: string | undefined;
  for (let at = 0; at < attrs.length; ) {
    if (attrs.length - at < 4) throw new NetlinkAnswerError("truncated extended-ack attribute");
    const len = attrs.readUInt16LE(at);
    if (len < 4 || at + len > attrs.length) throw new NetlinkAnswerError(`extended-ack attribute of length ${len}`);
    if (attrs.readUInt16LE(at + 2) === NLMSGERR_ATTR_MSG) {
      const text = attrs.subarray(at + 4, at + len);
      const end = text.indexOf(0);
      detail = text.subarray(0, end < 0 ? text.length : end).toString("utf8");
    }
    at += align4(len);
  }
  return detail;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
