// Connection errors become one sentence naming host and cause.
import assert from "node:assert/strict";
import { test } from "node:test";
import { mapConnectError, mapSessionError } from "../../src/ssh/errors.js";

const ctx = { host: "10.0.0.7", port: 22, user: "ubuntu", keyPath: "/home/me/.ssh/id_ed25519", timeoutMs: 10_000 };
const err = (message: string, extra: Record<string, unknown> = {}) => Object.assign(new Error(message), extra);

test("refused, unreachable, timeout, dns", () => {
  assert.equal(mapConnectError(err("connect ECONNREFUSED", { code: "ECONNREFUSED" }), { ...ctx, port: 2222 }).message, "Cannot connect to 10.0.0.7:2222: connection refused (is sshd running and listening on port 2222?).");
  assert.match(mapConnectError(err("x", { code: "EHOSTUNREACH" }), ctx).message, /^Cannot reach 10\.0\.0\.7: no route to the host \(EHOSTUNREACH\)/);
  assert.equal(mapConnectError(err("Timed out while waiting for handshake", { level: "client-timeout" }), ctx).message, "Cannot reach 10.0.0.7: no SSH answer within 10 s; check that the host is up and that a firewall lets port 22 through.");
  assert.match(mapConnectError(err("getaddrinfo ENOTFOUND", { code: "ENOTFOUND" }), { ...ctx, host: "nohost" }).message, /^Cannot resolve the host name nohost/);
});

test("authentication: names the user and the key (and ssh-agent when offered)", () => {
  const e = mapConnectError(err("All configured authentication methods failed", { level: "client-authentication" }), ctx);
  assert.equal(e.name, "UserError");
  assert.equal(e.message, `10.0.0.7 refused to log in user "ubuntu" with key /home/me/.ssh/id_ed25519: check auth.ssh_user and that this key's public half is in ~ubuntu/.ssh/authorized_keys on the host.`);
  assert.match(mapConnectError(err("All configured authentication methods failed", { level: "client-authentication" }), { ...ctx, agent: true }).message, /with key \/home\/me\/\.ssh\/id_ed25519 and the keys of ssh-agent/);
});

test("a refused host key: the verifier's sentence wins", () => {
  assert.equal(mapConnectError(err("Host denied (verification failed)"), { ...ctx, hostKeyMessage: "The host key of 10.0.0.7 has changed." }).message, "The host key of 10.0.0.7 has changed.");
});

test("encrypted key without agent; unreadable key", () => {
  assert.match(mapConnectError(err("Encrypted private OpenSSH key detected, but no passphrase given"), ctx).message, /protected by a passphrase; load it into ssh-agent \(ssh-add \/home\/me\/\.ssh\/id_ed25519\)/);
  assert.match(mapConnectError(err("Cannot parse privateKey: Unsupported key format"), ctx).message, /is not a private key ssh2 can read/);
});

test("session errors", () => {
  assert.match(mapSessionError(err("No response from server"), "h1", "uploading x").message, /^Lost the SSH connection to h1 while uploading x/);
  assert.match(mapSessionError(err("Failure", { code: 4 }), "h1", "uploading x").message, /disk may be full/);
  assert.match(mapSessionError(err("Permission denied", { code: 3 }), "h1", "uploading x").message, /permission denied/);
});
