import test from "ava";
import {
  type ClaimantEvidence,
  chooseNamespace,
  claimantsOf,
  groupByNamespace,
  parseNetnsLink,
  podUidsInCgroup,
  wantedIps,
} from "../../../agent/netns/namespace-match.js";

test("a /proc/PID/ns/net link gives its inode; anything else gives nothing", (t) => {
  t.is(parseNetnsLink("net:[4026531840]"), 4026531840);
  for (const bad of ["mnt:[4026531840]", "net:[]", "net:[12a]", "net:[4026531840] ", "/proc/1/ns/net", ""]) {
    t.is(parseNetnsLink(bad), undefined, bad);
  }
  t.is(parseNetnsLink(`net:[${"9".repeat(16)}]`), undefined, "longer than any inode");
});

test("processes group by namespace, lowest PID first, leaving out the skipped namespaces", (t) => {
  const groups = groupByNamespace(
    [
      { pid: 900, inode: 7 },
      { pid: 1, inode: 1 },
      { pid: 30, inode: 7 },
      { pid: 12, inode: 5 },
      { pid: 2, inode: 1 },
      { pid: 400, inode: 9 },
    ],
    new Set([1, 9]),
  );
  t.deepEqual(groups, [
    { inode: 5, pids: [12] },
    { inode: 7, pids: [30, 900] },
  ]);
  t.deepEqual(groupByNamespace([], new Set()), []);
});

test("wanted IPs are canonical, deduplicated, and never loopback, unspecified, link-local or multicast", (t) => {
  t.deepEqual(wantedIps(["10.1.1.2", "::ffff:10.1.1.2", "FD00:1:1::2", "fd00:1:1:0::2"]), [
    "10.1.1.2",
    "fd00:1:1:0:0:0:0:2",
  ]);
  t.deepEqual(
    wantedIps([
      "127.0.0.1",
      "::1",
      "0.0.0.0",
      "::",
      "169.254.1.1",
      "fe80::1",
      "febf::1",
      "224.0.0.1",
      "ff02::1",
      "::ffff:127.0.0.1",
      "not-an-ip",
      "",
    ]),
    [],
  );
  t.deepEqual(wantedIps(["fec0::1", "10.0.0.0", "2001:db8::1"]), [
    "fec0:0:0:0:0:0:0:1",
    "10.0.0.0",
    "2001:db8:0:0:0:0:0:1",
  ]);
});

test("claimants are the namespaces holding any wanted IP, with the ones each holds", (t) => {
  const wanted = wantedIps(["10.1.1.2", "fd00:1:1::2"]);
  const claimants = claimantsOf(wanted, [
    { inode: 5, addresses: ["127.0.0.1", "10.1.1.3"] },
    { inode: 6, addresses: ["127.0.0.1", "10.1.1.2", "fd00:1:1:0:0:0:0:2", "10.1.1.2"] },
    { inode: 7, addresses: ["fd00:1:1:0:0:0:0:2"] },
    { inode: 8, addresses: [] },
  ]);
  t.deepEqual(claimants, [
    { inode: 6, ips: ["10.1.1.2", "fd00:1:1:0:0:0:0:2"] },
    { inode: 7, ips: ["fd00:1:1:0:0:0:0:2"] },
  ]);
  t.deepEqual(claimantsOf([], [{ inode: 5, addresses: ["10.1.1.2"] }]), []);
});

const claim = (inode: number, podUids: string[] = []): ClaimantEvidence => ({ inode, ips: ["10.1.1.2"], podUids });
const UID = "2c48913c-b29f-11e7-9350-020968147796";
const OTHER = "daa5c7ee-3484-4533-af39-3591564fd03e";

test("one claimant is found, none is not_found, two are ambiguous", (t) => {
  t.like(chooseNamespace([claim(6)]), { kind: "found", inode: 6, ips: ["10.1.1.2"], ignored: [] });
  t.deepEqual(chooseNamespace([]), { kind: "not_found" });
  t.deepEqual(chooseNamespace([claim(6), claim(7)]), { kind: "ambiguous", claimants: [claim(6), claim(7)] });
  t.deepEqual(chooseNamespace([claim(6), claim(7)], UID), { kind: "ambiguous", claimants: [claim(6), claim(7)] });
  t.like(chooseNamespace([claim(6, [OTHER])]), { kind: "found", inode: 6 }, "no UID to compare with: IPs decide");
});

test("with the pod's UID, cgroup evidence decides between claimants", (t) => {
  t.like(chooseNamespace([claim(6, [OTHER]), claim(7, [UID])], UID), {
    kind: "found",
    inode: 7,
    ignored: [claim(6, [OTHER])],
  });
  t.like(chooseNamespace([claim(6), claim(7, [UID])], UID.toUpperCase()), { kind: "found", inode: 7 }, "a copy wins");
  t.like(chooseNamespace([claim(6, [OTHER]), claim(7)], UID), {
    kind: "found",
    inode: 7,
    ignored: [claim(6, [OTHER])],
  });
  t.deepEqual(chooseNamespace([claim(6, [OTHER])], UID), { kind: "other_pod", claimants: [claim(6, [OTHER])] });
  t.deepEqual(chooseNamespace([claim(6, [UID]), claim(7, [UID])], UID), {
    kind: "ambiguous",
    claimants: [claim(6, [UID]), claim(7, [UID])],
  });
  t.deepEqual(chooseNamespace([claim(6, [OTHER]), claim(7), claim(8)], UID), {
    kind: "ambiguous",
    claimants: [claim(7), claim(8)],
  });
});

test("pod UIDs come out of cgroup paths of both kubelet cgroup drivers, also below a cgroup namespace", (t) => {
  const cgroupfs = `12:memory:/kubepods/burstable/pod${UID}/9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961\n`;
  t.deepEqual(podUidsInCgroup(cgroupfs), [UID]);
  const systemd = `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID.replaceAll("-", "_")}.slice/cri-containerd-b2a1.scope\n`;
  t.deepEqual(podUidsInCgroup(systemd), [UID]);
  t.deepEqual(podUidsInCgroup(`0::/../../pod${UID.toUpperCase()}/c1\n1:cpu:/../../pod${UID}/c1\n`), [UID]);
  t.deepEqual(podUidsInCgroup(`0::/kubepods/pod${UID}/a\n1:cpu:/kubepods/pod${OTHER}/a`), [UID, OTHER]);
  for (const none of [
    "0::/\n",
    "0::/user.slice/user-0.slice/session-1.scope\n",
    `0::/kubepods/xpod${UID}/a\n`,
    `0::/kubepods/pod${UID}x/a\n`,
    `pod${UID}::/\n`,
    "",
  ]) {
    t.deepEqual(podUidsInCgroup(none), [], none);
  }
});
