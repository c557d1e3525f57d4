// Ticket codes: a ticket's identity signed with Ed25519, short enough for a
// QR code, and verifiable offline by anyone who holds the published key set.
//
// A code is base64url (no padding) of these bytes:
//   0    1   format version (1)
//   1    8   key id: the first 8 bytes of the signing key's RFC 7638 thumbprint
//   9   16   show id (UUID)
//   25  16   booking id (UUID)
//   41   8   seat id (unsigned, big-endian)
//   49   2   length L of the seat label in bytes (big-endian)
//   51   L   the seat label (UTF-8)
//   51+L 64  Ed25519 signature of bytes 0 to 51+L
// A ticket is one booked seat of a booking, so (booking id, seat id) names it.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface TicketRef {
  showId: string;
  bookingId: string;
  seatId: number;
  label: string;
}

/** A published public key: an RFC 7517 JWK of an Ed25519 key (RFC 8037). */
export interface TicketPublicKey {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  kid: string;
  use: 'sig';
  alg: 'EdDSA';
}

/** A key set as a scanner reads it: keys of other kinds are ignored. */
export interface TicketKeySet {
  keys: ReadonlyArray<{ kty: string; crv?: string; x?: string }>;
}

export type CodeCheck =
  | { valid: true; ticket: TicketRef; kid: string }
  | { valid: false; reason: 'malformed' | 'unknown-key' | 'bad-signature' };

const VERSION = 1;
const KID_BYTES = 8;
const SIGNATURE_BYTES = 64;
const HEADER_BYTES = 1 + KID_BYTES + 16 + 16 + 8 + 2;
const MAX_LABEL_BYTES = 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function uuidBytes(uuid: string): Buffer {
  if (!UUID.test(uuid)) throw new Error(`not a UUID: ${uuid}`);
  return Buffer.from(uuid.replaceAll('-', ''), 'hex');
}

function uuidText(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A key's id: the first 8 bytes of its RFC 7638 JWK thumbprint, base64url. */
export function keyIdOf(x: string): string {
  return createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest().subarray(0, KID_BYTES).toString('base64url');
}

function publicJwk(key: KeyObject): TicketPublicKey {
  const { x } = key.export({ format: 'jwk' });
  if (typeof x !== 'string') throw new Error('not an Ed25519 key');
  return { kty: 'OKP', crv: 'Ed25519', x, kid: keyIdOf(x), use: 'sig', alg: 'EdDSA' };
}

/** The signed part of a code, before its signature. */
function payload(ticket: TicketRef, kid: string): Buffer {
  const label = Buffer.from(ticket.label, 'utf8');
  if (label.length > MAX_LABEL_BYTES) throw new Error('seat label too long for a ticket code');
  const head = Buffer.alloc(HEADER_BYTES);
  head.writeUInt8(VERSION, 0);
  Buffer.from(kid, 'base64url').copy(head, 1);
  uuidBytes(ticket.showId).copy(head, 9);
  uuidBytes(ticket.bookingId).copy(head, 25);
  head.writeBigUInt64BE(BigInt(ticket.seatId), 41);
  head.writeUInt16BE(label.length, 49);
  return Buffer.concat([head, label]);
}

/**
 * Checks a code against a key set, as a scanner does offline: the format,
 * the key id, and the signature. Any change to any character fails: the
 * text must be the one canonical base64url of its bytes.
 */
export function verifyTicketCode(code: string, keySet: TicketKeySet | Map<string, KeyObject>): CodeCheck {
  if (!/^[A-Za-z0-9_-]+$/.test(code) || code.length > 2 * MAX_LABEL_BYTES) return { valid: false, reason: 'malformed' };
  const bytes = Buffer.from(code, 'base64url');
  if (bytes.toString('base64url') !== code || bytes.length < HEADER_BYTES + SIGNATURE_BYTES || bytes[0] !== VERSION) {
    return { valid: false, reason: 'malformed' };
  }
  const labelBytes = bytes.readUInt16BE(49);
  const signed = HEADER_BYTES + labelBytes;
  if (bytes.length !== signed + SIGNATURE_BYTES) return { valid: false, reason: 'malformed' };
  const kid = bytes.subarray(1, 1 + KID_BYTES).toString('base64url');
  const key = (keySet instanceof Map ? keySet : verifiersOf(keySet)).get(kid);
  if (!key) return { valid: false, reason: 'unknown-key' };
  if (!verify(null, bytes.subarray(0, signed), key, bytes.subarray(signed))) return { valid: false, reason: 'bad-signature' };
  const seatId = bytes.readBigUInt64BE(41);
  if (seatId > BigInt(Number.MAX_SAFE_INTEGER)) return { valid: false, reason: 'malformed' };
  return {
    valid: true,
    kid,
    ticket: {
      showId: uuidText(bytes.subarray(9, 25)),
      bookingId: uuidText(bytes.subarray(25, 41)),
      seatId: Number(seatId),
      label: bytes.subarray(HEADER_BYTES, signed).toString('utf8'),
    },
  };
}

/** The verifying keys of a published key set, by key id. */
export function verifiersOf(keySet: TicketKeySet): Map<string, KeyObject> {
  const verifiers = new Map<string, KeyObject>();
  for (const { kty, crv, x } of keySet.keys) {
    if (kty !== 'OKP' || crv !== 'Ed25519' || typeof x !== 'string') continue;
    verifiers.set(keyIdOf(x), createPublicKey({ key: { kty, crv, x }, format: 'jwk' }));
  }
  return verifiers;
}

/**
 * The service's keys: the one that signs new codes, and earlier ones whose
 * codes still verify while they are being rotated out.
 */
export class TicketKeys {
  readonly keySet: { keys: TicketPublicKey[] };
  private readonly signer: KeyObject;
  private readonly kid: string;
  private readonly verifiers: Map<string, KeyObject>;

  /** `signingKeyPem`: an Ed25519 PKCS#8 PEM; `previous`: earlier public keys as base64url `x` values. */
  constructor(signingKeyPem: string, previous: readonly string[] = []) {
    this.signer = createPrivateKey(signingKeyPem);
    if (this.signer.asymmetricKeyType !== 'ed25519') throw new Error('ticket codes are signed with an Ed25519 key');
    const current = publicJwk(createPublicKey(this.signer));
    this.kid = current.kid;
    const older = previous
      .map((x): TicketPublicKey => ({ kty: 'OKP', crv: 'Ed25519', x, kid: keyIdOf(x), use: 'sig', alg: 'EdDSA' }))
      .filter((key) => key.kid !== current.kid);
    this.keySet = { keys: [current, ...older] };
    this.verifiers = verifiersOf(this.keySet);
  }

  /** A fresh key, for a development run or a test. */
  static generatePem(): string {
    return generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  }

  /** The id of the key that signs new codes. */
  get signingKeyId(): string {
    return this.kid;
  }

  sign(ticket: TicketRef): string {
    const message = payload(ticket, this.kid);
    return Buffer.concat([message, sign(null, message, this.signer)]).toString('base64url');
  }

  verify(code: string): CodeCheck {
    return verifyTicketCode(code, this.verifiers);
  }
}

/**
 * A signing key kept in a file, made there the first time (readable by its
 * owner only): development tickets stay valid across restarts.
 */
export function keptSigningKey(file: string): { pem: string; created: boolean } {
  if (existsSync(file)) return { pem: readFileSync(file, 'utf8'), created: false };
  const pem = TicketKeys.generatePem();
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, pem, { mode: 0o600, flag: 'wx' });
  return { pem, created: true };
}
