// Host-key decisions (trust on first use, pins, known_hosts) as pure functions.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import { algorithmsForKeyType, decideHostKey, fingerprint, formatHostKey, keyTypeOf, knownKeysFor, parseKnownHosts } from "../../src/ssh/hostkeys.js";

const K1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFyruRxlN43PU+PNdoIJ+YisnmY3nwiTGqu6WaCjt7Aj";
const K2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnJl36cPIozZ8b8cNQySnGR6pvVCN7me9Nc4InXu1K9";

test("key blob: type and the known_hosts form", () => {
  const blob = Buffer.from(K1.split(" ")[1]!, "base64");
  assert.equal(keyTypeOf(blob), "ssh-ed25519");
  assert.equal(formatHostKey(blob), K1);
  assert.equal(keyTypeOf(Buffer.from([0, 0])), "unknown");
  assert.match(fingerprint(K1), /^SHA256:[A-Za-z0-9+/]{43}$/);
});

test("first contact pins; the same key is accepted; a changed key is refused with both fingerprints", () => {
  assert.deepEqual(decideHostKey({ host: "10.0.0.1", port: 22, presented: K1 }), { action: "pin" });
  assert.deepEqual(decideHostKey({ host: "10.0.0.1", port: 22, presented: K1 + " comment", pinned: K1 }), { action: "accept", source: "pinned" });
  const d = decideHostKey({ host: "10.0.0.1", port: 2222, presented: K2, pinned: K1, stateFile: "/h/state.json" });
  assert.equal(d.action, "reject");
  assert.equal(
    (d as { message: string }).message,
    `The host key of 10.0.0.1:2222 has changed since tray first connected (was ${fingerprint(K1)}, now ${fingerprint(K2)}): the host was reinstalled or someone is intercepting the connection; if the change is expected, remove "10.0.0.1:2222" from hostKeys in /h/state.json and run the command again.`,
  );
});

test("strict: no pin and no known_hosts entry is refused", () => {
  const d = decideHostKey({ host: "h", port: 22, presented: K1, strict: true });
  assert.equal(d.action, "reject");
  assert.match((d as { message: string }).message, /^tray has no pinned host key for h/);
});

test("known_hosts: plain, [host]:port, hashed, wildcard, negation, revoked, CA lines ignored", () => {
  const salt = Buffer.from("0123456789abcdefghij");
  const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("hashed.example").digest("base64")}`;
  const entries = parseKnownHosts([
    "# comment",
    "",
    `a.example,10.0.0.5 ${K1} user@x`,
    `[b.example]:2222 ${K2}`,
    `${hashed} ${K2}`,
    `*.wild.example,!bad.wild.example ${K1}`,
    `@revoked rev.example ${K2}`,
    `@cert-authority *.example ${K2}`,
    "garbage",
  ].join("\n"));
  assert.deepEqual(knownKeysFor(entries, "10.0.0.5", 22).keys, [K1]);
  assert.deepEqual(knownKeysFor(entries, "b.example", 2222).keys, [K2]);
  assert.deepEqual(knownKeysFor(entries, "b.example", 22).keys, []);
  assert.deepEqual(knownKeysFor(entries, "hashed.example", 22).keys, [K2]);
  assert.deepEqual(knownKeysFor(entries, "x.wild.example", 22).keys, [K1]);
  assert.deepEqual(knownKeysFor(entries, "bad.wild.example", 22).keys, []);
  assert.deepEqual(knownKeysFor(entries, "rev.example", 22), { keys: [], revoked: [K2] });

  assert.deepEqual(decideHostKey({ host: "a.example", port: 22, presented: K1, knownHosts: entries }), { action: "accept", source: "known_hosts" });
  // known_hosts wins over a pin, and a mismatch is refused even when pinned
  const mism = decideHostKey({ host: "a.example", port: 22, presented: K2, pinned: K2, knownHosts: entries, knownHostsFile: "/kh" });
  assert.equal(mism.action, "reject");
  assert.match((mism as { message: string }).message, /^The host key of a\.example does not match \/kh/);
  const rev = decideHostKey({ host: "rev.example", port: 22, presented: K2, knownHosts: entries });
  assert.match((rev as { message: string }).message, /marked @revoked/);
  // host not listed: trust on first use as usual
  assert.deepEqual(decideHostKey({ host: "new.host", port: 22, presented: K1, knownHosts: entries }), { action: "pin" });
});

test("rsa keys are verified with the rsa-sha2 algorithms too", () => {
  assert.deepEqual(algorithmsForKeyType("ssh-rsa"), ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
  assert.deepEqual(algorithmsForKeyType("ssh-ed25519"), ["ssh-ed25519"]);
});
