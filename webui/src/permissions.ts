// What each role may do, as controller/core/access_policy.cpp decides it. The UI only hides
// what a role cannot do; the server refuses it anyway (403).
import type { Role } from "./types";

export type Permission = "read" | "read-audit" | "write-policy" | "write-inventory" | "handle-incidents" | "quarantine";

const ROLE_PERMISSIONS: Record<Role, Permission[]> = {
  admin: ["read", "read-audit", "write-policy", "write-inventory", "handle-incidents", "quarantine"],
  soc: ["read", "read-audit", "handle-incidents", "quarantine"],
  automation: ["read", "quarantine"],
  enforcer: [],
};

export function roleAllows(role: Role, permission: Permission): boolean {
  return ROLE_PERMISSIONS[role]?.includes(permission) ?? false;
}
