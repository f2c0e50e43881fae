// Entry point: sign in with a bearer token (checked with GET /api/v1/whoami), then the shell.
import "./styles.css";
import { ApiError, describeError, fetchWhoami } from "./api";
import { h, replaceChildren } from "./dom";
import { startShell } from "./shell";
import type { Role, Whoami } from "./types";

const TOKEN_KEY = "bulkhead.token";
const root = document.getElementById("app") as HTMLElement;

async function boot(): Promise<void> {
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      const user = await fetchWhoami(saved);
      enter(saved, user as Whoami);
      return;
    } catch (error) {
      if (error instanceof ApiError) {
        sessionStorage.removeItem(TOKEN_KEY);
        showSignIn("Your session ended: " + describeError(error));
      } else {
        showSignIn("The controller does not answer. Check that bulkhead-controller runs, then sign in again.", saved);
      }
      return;
    }
  }
  showSignIn();
}

function enter(token: string, user: Whoami): void {
  sessionStorage.setItem(TOKEN_KEY, token);
  startShell(root, token, user, () => {
    sessionStorage.removeItem(TOKEN_KEY);
    window.location.hash = "";
    showSignIn("Signed out.");
  });
}

function showSignIn(message?: string, token = ""): void {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true, spellcheck: "false", value: token, "aria-describedby": "signin-help" });
  const status = h("p", { class: "signin-message", role: "status", id: "signin-message" }, message ?? "");
  const button = h("button", { class: "button primary", type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Bulkhead SOC"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "hint", id: "signin-help" }, "A bearer token of role admin, soc or automation (the lab writes them to <state>/tokens/)."),
    button,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      return;
    }
    button.disabled = true;
    status.textContent = "Checking the token…";
    try {
      const user = await fetchWhoami(value);
      if (!["admin", "soc", "automation"].includes(user.role)) {
        status.textContent = `A token of role ${user.role} cannot use the dashboard.`;
        return;
      }
      enter(value, { name: user.name, role: user.role as Role });
    } catch (error) {
      status.textContent =
        error instanceof ApiError && error.status === 401
          ? "This token is not valid."
          : error instanceof ApiError
            ? describeError(error)
            : "The controller does not answer: " + describeError(error);
    } finally {
      button.disabled = false;
    }
  });
  replaceChildren(root, h("main", { class: "signin-page" }, form));
  input.focus();
}

void boot();
