#!/usr/bin/env node
// A user's "Clear" of a failed task in the Airflow 3 UI, in a real browser: Debian's headless
// chromium driven by playwright-core (never a downloaded browser).
//
// It logs in through the UI's login page (the Simple auth manager's form), opens the run's page
// (/dags/{dag}/runs/{run}) and screenshots it, clicks the task's cell in the grid (the task
// instance page), presses the Clear button, keeps the dialog's defaults, presses "Confirm" and
// waits for the dialog to close, then screenshots the task and the run again. Every request the
// page makes to POST /api/v2/dags/{dag}/clearTaskInstances is captured: the dialog's dry run
// (which lists the affected tasks) and the real clear, whose body is what the defaults send.
//
// Input: one JSON object on stdin, or the same as options (an option wins over stdin):
//   {"url": "http://127.0.0.1:8080", "username": "admin", "password": "admin",
//    "dag_id": "...", "run_id": "...", "task_id": "...", "screenshot_dir": "/path",
//    "action": "clear" | "screenshot", "name": "run-final", "timeout_ms": 30000}
//   --url U --username N --password P --dag-id D --run-id R --task-id T --screenshot-dir DIR
//   --action clear|screenshot --name NAME --timeout-ms MS
// "screenshot" only logs in and screenshots the run's page as DIR/NAME.png (e.g. once the run
// has finished). The password is best given on stdin (not on the command line).
//
// Output (stdout): one JSON object, {"ok": true, "action", "screenshots": [paths],
// "clear_request": {...}, "clear_response": {"status", "task_ids"}, "dry_run_request": {...},
// "affected_tasks": [...], "task_state_before": "Failed", "seconds"}.
// Failure: exit 1 and one line on stderr, "clear_task: <stage>: <cause> (screenshot: PATH)";
// exit 2 for bad input. Environment: CHROMIUM (default /usr/bin/chromium), CLEAR_TASK_VERBOSE=1
// for progress lines on stderr.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const OPTIONS = {
  url: "url",
  username: "username",
  password: "password",
  "dag-id": "dag_id",
  "run-id": "run_id",
  "task-id": "task_id",
  "screenshot-dir": "screenshot_dir",
  action: "action",
  name: "name",
  "timeout-ms": "timeout_ms",
};
// The Clear button of a task instance: "Clear Task Instance", or with the hotkey enabled (the
// task instance page's header) its tooltip "Press shift+c to clear", icon only.
const CLEAR_BUTTON = /^Clear Task Instance$|shift\+c to clear/i;

class Failure extends Error {
  constructor(stage, message) {
    super(message);
    this.stage = stage;
  }
}

const STARTED = Date.now();

function verbose(message) {
  const seconds = ((Date.now() - STARTED) / 1000).toFixed(1);
  if (process.env.CLEAR_TASK_VERBOSE === "1") process.stderr.write(`clear_task: ${seconds} s: ${message}\n`);
}

function oneLine(text) {
  return String(text).split("\n").map((line) => line.trim()).filter(Boolean)[0] ?? String(text);
}

async function readInput(argv) {
  let input = {};
  if (!process.stdin.isTTY) {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString().trim();
    if (text) {
      try {
        input = JSON.parse(text);
      } catch (error) {
        throw new Failure("input", `stdin is not one JSON object: ${error.message}`);
      }
    }
  }
  for (let i = 0; i < argv.length; i += 1) {
    const key = OPTIONS[argv[i].replace(/^--/, "")];
    if (!argv[i].startsWith("--") || key === undefined || i + 1 >= argv.length) {
      throw new Failure("input", `unknown option or missing value: ${argv[i]}`);
    }
    input[key] = argv[(i += 1)];
  }
  input.action ??= "clear";
  input.username ??= "admin";
  const needed = ["url", "password", "dag_id", "run_id", "screenshot_dir", ...(input.action === "clear" ? ["task_id"] : [])];
  const missing = needed.filter((key) => !input[key]);
  if (missing.length) throw new Failure("input", `missing: ${missing.join(", ")}`);
  if (!["clear", "screenshot"].includes(input.action)) throw new Failure("input", `unknown action ${input.action}`);
  input.url = input.url.replace(/\/+$/, "");
  input.timeout_ms = Number(input.timeout_ms ?? 30000);
  return input;
}

class Session {
  constructor(input) {
    this.input = input;
    this.screenshots = [];
    this.clearRequests = []; // bodies of POST .../clearTaskInstances, in order
    this.clearResponses = []; // {dry_run, status, body}
    this.stage = "launch";
  }

  async start() {
    verbose("launching chromium");
    this.userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vdimport-chromium-"));
    this.context = await chromium.launchPersistentContext(this.userDataDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1600, height: 1000 },
      timeout: 60000,
    });
    this.page = this.context.pages()[0] ?? (await this.context.newPage());
    this.page.setDefaultTimeout(this.input.timeout_ms);
    verbose(`chromium ${this.context.browser()?.version() ?? ""} up`);
    const clearPath = `/api/v2/dags/${encodeURIComponent(this.input.dag_id)}/clearTaskInstances`;
    this.page.on("request", (request) => {
      if (request.method() === "POST" && new URL(request.url()).pathname === clearPath) {
        this.clearRequests.push(JSON.parse(request.postData() ?? "null"));
      }
    });
    this.page.on("response", async (response) => {
      const request = response.request();
      if (request.method() !== "POST" || new URL(response.url()).pathname !== clearPath) return;
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = await response.text().catch(() => null);
      }
      this.clearResponses.push({ dry_run: JSON.parse(request.postData() ?? "{}").dry_run, status: response.status(), body });
    });
  }

  async stop() {
    await this.context?.close().catch(() => {});
    if (this.userDataDir) fs.rmSync(this.userDataDir, { recursive: true, force: true });
  }

  async shot(name) {
    const file = path.join(this.input.screenshot_dir, `${name}.png`);
    // Let a dialog finish fading in or out (the UI's finite CSS animations), at most 2 s.
    await this.page
      .evaluate(() => {
        const finite = document.getAnimations().filter((a) => a.effect?.getComputedTiming().endTime !== Infinity);
        return Promise.race([Promise.all(finite.map((a) => a.finished)), new Promise((r) => setTimeout(r, 2000))]);
      })
      .catch(() => {});
    await this.page.screenshot({ path: file, fullPage: true });
    this.screenshots.push(file);
    verbose(`screenshot ${file}`);
    return file;
  }

  runPath() {
    return `/dags/${encodeURIComponent(this.input.dag_id)}/runs/${encodeURIComponent(this.input.run_id)}`;
  }

  async login() {
    this.stage = "login";
    const { page, input } = this;
    await page.goto(input.url + this.runPath()); // not logged in: the UI sends us to its login page
    const username = page.getByLabel("Username");
    await username.or(this.runHeading()).first().waitFor();
    if (!(await username.count())) return; // a session already
    await username.fill(input.username);
    await page.getByLabel("Password").fill(input.password);
    const answer = page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/auth/token");
    await page.getByRole("button", { name: "Sign in" }).click();
    const reply = await answer;
    if (!reply.ok()) {
      const detail = await reply.json().then((b) => b.detail ?? JSON.stringify(b), () => reply.statusText());
      throw new Failure("login", `POST /auth/token answered ${reply.status()}: ${oneLine(detail)}`);
    }
    try {
      await page.waitForURL((url) => !url.pathname.startsWith("/auth/"), { timeout: 15000 });
    } catch {
      throw new Failure("login", `still on the login page after "Sign in" (${page.url()})`);
    }
    verbose(`logged in as ${input.username}`);
  }

  async openRun() {
    this.stage = "open run";
    const { page, input } = this;
    if (new URL(page.url()).pathname !== this.runPath() && decodeURIComponent(new URL(page.url()).pathname) !== decodeURIComponent(this.runPath())) {
      await page.goto(input.url + this.runPath());
    }
    // The run's header names the run; the grid shows its task instances.
    await this.runHeading().waitFor();
    await page.getByText(/\d+ Task Instances?/).first().waitFor();
    verbose("run page shown");
    await page.waitForLoadState("networkidle");
    verbose("run page loaded");
  }

  runHeading() {
    return this.page.getByRole("heading", { name: this.input.run_id, exact: true }).first();
  }

  gridCell() {
    // The grid's cell of the task in this run (the UI's own test id): a link to the task instance page.
    return this.page.getByTestId(`grid-${this.input.run_id}-${this.input.task_id}`);
  }

  async openTask() {
    this.stage = "open task";
    const { page, input } = this;
    // The grid's cell, else the task instances table's link (the task's name): the same page.
    const cell = this.gridCell();
    const link = page.getByRole("link", { name: input.task_id, exact: true }).first();
    try {
      await cell.or(link).first().waitFor({ timeout: Math.min(input.timeout_ms, 15000) });
    } catch {
      throw new Failure("open task", `no task ${input.task_id} in the run's grid or task instances`);
    }
    await ((await cell.count()) ? cell : link).click();
    await page.waitForURL((url) => decodeURIComponent(url.pathname).endsWith(`/runs/${input.run_id}/tasks/${input.task_id}`));
    const heading = page.getByRole("heading", { name: new RegExp(`^${escapeRegExp(input.task_id)}\\b`) }).first();
    await heading.waitFor();
    await page.waitForLoadState("networkidle");
    // The state badge beside the task's name in the header
    const header = heading.locator("xpath=..");
    const badge = header.getByTestId("state-badge");
    this.taskStateBefore = (await badge.count()) ? oneLine(await badge.first().innerText()) : null;
    verbose(`task ${input.task_id} shows ${this.taskStateBefore}`);
  }

  async clear() {
    this.stage = "clear dialog";
    const { page, input } = this;
    await page.getByRole("button", { name: CLEAR_BUTTON }).first().click();
    // (the dialog has no accessible name: its title is a plain heading inside it)
    const dialog = page.getByRole("dialog").filter({ has: page.getByRole("heading", { name: /^Clear Task Instance/ }) });
    await dialog.waitFor();
    // The dialog asks for a dry run and lists what will be cleared: wait for it, keep the defaults.
    await dialog.getByText(/Affected Tasks: \d+/).waitFor();
    await expectResponse(() => this.clearResponses.some((r) => r.dry_run === true), input.timeout_ms, "the dialog's dry run");
    await page.waitForLoadState("networkidle");
    await this.shot("3-clear-dialog");
    this.stage = "confirm";
    const confirm = dialog.getByRole("button", { name: "Confirm", exact: true });
    await confirm.waitFor();
    if (!(await confirm.isEnabled())) throw new Failure("confirm", "the dialog's Confirm button is disabled");
    await confirm.click();
    await expectResponse(() => this.clearResponses.some((r) => r.dry_run === false), input.timeout_ms, "the clear request's answer");
    const answer = this.clearResponses.find((r) => r.dry_run === false);
    if (answer.status !== 200) {
      throw new Failure("confirm", `POST clearTaskInstances answered ${answer.status}: ${oneLine(JSON.stringify(answer.body))}`);
    }
    await dialog.waitFor({ state: "hidden" });
    verbose(`cleared ${(answer.body?.task_instances ?? []).map((ti) => ti.task_id).join(", ")}`);
  }

  result(started) {
    const real = this.clearRequests.find((body) => body && body.dry_run === false) ?? null;
    const dry = this.clearRequests.find((body) => body && body.dry_run === true) ?? null;
    const answer = this.clearResponses.find((r) => r.dry_run === false);
    const preview = this.clearResponses.find((r) => r.dry_run === true);
    const taskIds = (reply) => (reply?.body?.task_instances ?? []).map((ti) => ti.task_id);
    return {
      ok: true,
      action: this.input.action,
      screenshots: this.screenshots,
      task_state_before: this.taskStateBefore ?? null,
      dry_run_request: dry,
      affected_tasks: preview ? taskIds(preview) : [],
      clear_request: real,
      clear_response: answer ? { status: answer.status, task_ids: taskIds(answer) } : null,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
  }
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function expectResponse(condition, timeout, what) {
  const deadline = Date.now() + timeout;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`no answer to ${what} after ${timeout} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main() {
  const started = Date.now();
  let input;
  try {
    input = await readInput(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`clear_task: ${error.stage ?? "input"}: ${oneLine(error.message)}\n`);
    return 2;
  }
  fs.mkdirSync(input.screenshot_dir, { recursive: true });
  const session = new Session(input);
  try {
    await session.start();
    await session.login();
    await session.openRun();
    if (input.action === "screenshot") {
      await session.shot(input.name ?? "run");
    } else {
      await session.shot("1-run-before");
      await session.openTask();
      await session.shot("2-task-before");
      await session.clear();
      await session.page.waitForLoadState("networkidle");
      await session.shot("4-task-after-clear");
      session.stage = "open run after clear";
      await session.page.goto(input.url + session.runPath());
      await session.openRun();
      await session.shot("5-run-after-clear");
    }
    process.stdout.write(`${JSON.stringify(session.result(started))}\n`);
    return 0;
  } catch (error) {
    let where = "";
    try {
      if (session.page) where = ` (screenshot: ${await session.shot("failure")})`;
    } catch {
      // no page to take
    }
    process.stderr.write(`clear_task: ${error.stage ?? session.stage}: ${oneLine(error.message)}${where}\n`);
    return 1;
  } finally {
    await session.stop();
  }
}

process.exitCode = await main();
