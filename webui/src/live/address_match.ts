// IPv4/IPv6 addresses and CIDR blocks as integers, to put an address in a segment's cidrs.

export interface ParsedAddress {
  family: 4 | 6;
  value: bigint;
}

export function parseAddress(text: string): ParsedAddress | undefined {
  if (text.includes(":")) {
    return parseIpv6(text);
  }
  const parts = text.split(".");
  if (parts.length !== 4) {
    return undefined;
  }
  let value = 0n;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) {
      return undefined;
    }
    value = (value << 8n) | BigInt(Number(part));
  }
  return { family: 4, value };
}

function parseIpv6(text: string): ParsedAddress | undefined {
  const halves = text.split("::");
  if (halves.length > 2) {
    return undefined;
  }
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 1 && missing !== 0) || missing < 0) {
    return undefined;
  }
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  let value = 0n;
  for (const group of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) {
      return undefined;
    }
    value = (value << 16n) | BigInt(parseInt(group, 16));
  }
  return { family: 6, value };
}

export interface CidrBlock {
  family: 4 | 6;
  network: bigint;
  prefix: number;
}

export function parseCidr(text: string): CidrBlock | undefined {
  const [addressText, prefixText] = text.split("/");
  const address = parseAddress(addressText);
  if (!address) {
    return undefined;
  }
  const bits = address.family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? bits : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) {
    return undefined;
  }
  return { family: address.family, network: address.value >> BigInt(bits - prefix), prefix };
}

export function cidrContains(block: CidrBlock, address: ParsedAddress): boolean {
  if (block.family !== address.family) {
    return false;
  }
  const bits = address.family === 4 ? 32 : 128;
  return address.value >> BigInt(bits - block.prefix) === block.network;
}
