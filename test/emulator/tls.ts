// A throwaway certificate authority and a server certificate for 127.0.0.1/localhost, made
// with openssl at test time (Azure's SDK refuses to send a bearer token over http:, so the
// ARM emulator serves https). Processes that talk to the emulator trust the CA through
// NODE_EXTRA_CA_CERTS=<caFile>.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface TestTls {
  dir: string;
  caFile: string;
  ca: string;
  key: string;
  cert: string;
  cleanup(): void;
}

export function makeTestTls(): TestTls {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-emu-tls-"));
  const f = (n: string) => path.join(dir, n);
  const ossl = (...args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=tray emulator test CA", "-keyout", f("ca.key"), "-out", f("ca.pem"));
  ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", f("server.key"), "-out", f("server.csr"));
  fs.writeFileSync(f("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n");
  ossl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "2", "-extfile", f("ext.cnf"), "-out", f("server.pem"));
  return {
    dir,
    caFile: f("ca.pem"),
    ca: fs.readFileSync(f("ca.pem"), "utf8"),
    key: fs.readFileSync(f("server.key"), "utf8"),
    cert: fs.readFileSync(f("server.pem"), "utf8"),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
