"""The web interface in real Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against a real HTTP server and a real worker. Saves screenshots of the main pages
to var/screenshots/ (OPIE_SCREENSHOT_DIR); the README shows them from docs/screenshots/."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import ROOT
from tests.factories import make_agent

pytestmark = pytest.mark.worker

CHROMIUM = os.environ.get("OPIE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# screenshots of the main pages (the README shows copies from docs/screenshots/)
SHOTS = Path(os.environ.get("OPIE_SCREENSHOT_DIR", ROOT / "var" / "screenshots"))
PARIS = "The Eiffel Tower stands in Paris on the Champ de Mars and was finished in 1889."


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (make test installs Debian's chromium)"
    # Playwright's sync API keeps an event loop on this thread; the test's own ORM
    # calls are still synchronous, so Django's async guard is lifted for this module.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox", "--disable-dev-shm-usage"])
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser: Any, live_server: Any, user: Any) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto("/agentos/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/agentos/")
    yield page
    context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def test_chat_streams_the_reply_shows_tool_calls_and_uploads_to_the_vault(page, start_worker, user):
    from playwright.sync_api import expect

    start_worker(queues="agents,sync,webhooks,knowledge")
    agent = make_agent(user, name="Helper", description="Answers with the local model.", tools=["calculator"])

    page.get_by_role("link", name="Agents", exact=True).click()
    expect(page.get_by_role("heading", name="Helper")).to_be_visible()
    page.get_by_role("link", name="Chat").first.click()
    page.wait_for_url(f"**/agentos/chat/{agent.public_id}/")

    send(page, "hello there")
    expect(page.locator(".msg.user p").last).to_have_text("hello there")
    expect(page.locator(".msg.assistant .content").last).to_have_text("Echo #1: hello there")
    assert page.evaluate("document.activeElement.id") == "message", "focus returns to the message box"

    send(page, "/tool calculator 6*7")
    expect(page.locator(".msg.assistant .content").last).to_have_text("calculator returned: 42")
    card = page.locator("details.tool").last
    expect(card.locator("dd").last).not_to_be_visible()
    card.locator("summary").click()
    expect(card).to_contain_text("calculator")
    expect(card.locator("dd").last).to_have_text("42")

    page.get_by_label(re.compile("Add a file")).set_input_files(
        files=[{"name": "paris.txt", "mimeType": "text/plain", "buffer": PARIS.encode()}])
    page.get_by_role("button", name="Upload").click()
    document = page.locator("#documents .document").first
    expect(document).to_contain_text("paris.txt")
    expect(document.locator(".badge")).to_have_text(re.compile("ready · 1 chunk"), timeout=90_000)
    shot(page, "chat")

    page.get_by_role("link", name="Session page").click()
    expect(page.get_by_role("heading", name="hello there")).to_be_visible()
    expect(page.locator(".transcript .msg")).to_have_count(4)
    shot(page, "session")
    page.get_by_label("Title").fill("Greetings")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("heading", name="Greetings")).to_be_visible()

    page.get_by_role("link", name="Agents", exact=True).click()
    expect(page.locator(".metrics")).to_contain_text("100 %")  # both messages succeeded
    shot(page, "agents")

    page.get_by_role("link", name="Dashboard", exact=True).click()
    expect(page.get_by_role("link", name="Helper").first).to_be_visible()  # your agents
    expect(page.get_by_role("link", name="Greetings").first).to_be_visible()  # recent sessions, renamed
    shot(page, "dashboard")

    # the vault's ready document, attached as knowledge: the reply lists it as a source
    from apps.knowledge.services import kb_attach, vault_for

    kb_attach(user=user, kb=vault_for(user=user), agent=agent)
    page.goto(f"/agentos/chat/{agent.public_id}/")
    send(page, "Where is the Eiffel Tower?")
    expect(page.locator(".msg.assistant .content").last).to_contain_text("From the knowledge base: [1] (paris.txt)")
    sources = page.locator(".msg.assistant").last.locator("details.sources")
    expect(sources.locator("summary")).to_have_text("Sources (1)")
    sources.locator("summary").click()
    expect(sources.locator("li").first).to_contain_text("paris.txt")
    expect(sources.locator("li").first).to_contain_text("Champ de Mars")


def test_a_slow_reply_streams_into_its_bubble_before_the_job_ends(page, start_worker, user):
    from playwright.sync_api import expect

    start_worker()
    agent = make_agent(user, name="Slow", model_options={"latency_ms": 2000})
    page.goto(f"/agentos/chat/{agent.public_id}/")
    full = "Echo #1: show me the words as they come in"

    send(page, "show me the words as they come in")
    # part of the reply, in the bubble that is still pending (the job has not ended)
    page.wait_for_function("""full => {
        const bubble = document.querySelector('.msg.pending .content');
        const text = bubble ? bubble.textContent : '';
        return text.length > 0 && text !== full && full.startsWith(text);
    }""", arg=full, polling=20, timeout=15_000)
    expect(page.locator(".msg.pending .status")).to_have_text("Writing…")

    expect(page.locator(".msg.pending")).to_have_count(0)  # ended: the rendered reply took its place
    expect(page.locator(".msg.assistant .content").last).to_have_text(full)


def test_a_slow_reply_can_be_cancelled_and_a_failed_one_retried(page, start_worker, user):
    from playwright.sync_api import expect

    start_worker()
    slow = make_agent(user, name="Slow", model_options={"latency_ms": 20_000})
    page.goto(f"/agentos/chat/{slow.public_id}/")

    send(page, "take your time")
    pending = page.locator(".msg.pending")
    expect(pending.locator(".status")).to_have_text("Thinking…")
    pending.get_by_role("button", name="Cancel").click()
    expect(page.locator(".msg.assistant.cancelled")).to_contain_text("Cancelled.", timeout=15_000)

    send(page, "/fail upstream is down")
    failed = page.locator(".msg.assistant.failed")
    expect(failed).to_contain_text("upstream is down")
    failed.get_by_role("button", name="Retry").click()
    expect(page.locator(".msg.user p").last).to_have_text("/fail upstream is down")


def test_a_tool_call_waiting_for_approval_is_approved_from_the_chat_and_the_reply_follows(page, start_worker, user):
    from playwright.sync_api import expect

    start_worker()
    agent = make_agent(user, name="Careful", tools=["calculator"], tool_policies={"calculator": "approve"})
    page.goto(f"/agentos/chat/{agent.public_id}/")

    send(page, "/tool calculator 2+2")
    card = page.locator("form.action-card")
    expect(card).to_be_visible()  # live: the stream said job.action_required, no reload
    expect(page.locator(".msg.pending .status")).to_have_text("Waiting for your decision…")
    expect(card.get_by_role("heading")).to_contain_text("calculator")
    expect(card.locator("pre")).to_contain_text('"expression": "2+2"')
    card.get_by_label("Note").fill("looks right")
    shot(page, "approval")
    card.get_by_role("button", name="Approve").click()

    expect(page.locator(".msg.assistant .content").last).to_have_text("calculator returned: 4")
    expect(page.locator(".msg.pending")).to_have_count(0)
    page.get_by_role("link", name="Approvals", exact=True).click()
    expect(page.get_by_text("Nothing waits for you.")).to_be_visible()


def test_an_input_is_given_in_the_chat_and_a_stale_card_elsewhere_says_it_was_decided(page, start_worker, user):
    from playwright.sync_api import expect

    start_worker()
    agent = make_agent(user, name="Asker", tools=["calculator"], tool_policies={"calculator": "input"})
    page.goto(f"/agentos/chat/{agent.public_id}/")
    send(page, "/tool calculator")
    expect(page.locator("form.action-card")).to_contain_text("Input needed for calculator")
    approvals = page.context.new_page()  # a second tab, on the Approvals page
    approvals.goto("/agentos/approvals/")
    stale = approvals.locator("form.action-card")
    expect(stale.get_by_role("link", name="/tool calculator")).to_be_visible()  # its session, by title
    shot(approvals, "approvals")

    page.locator("form.action-card").get_by_label("expression").fill("5*5")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".msg.assistant .content").last).to_have_text("calculator returned: 25")

    stale.get_by_label("expression").fill("6*6")
    stale.get_by_role("button", name="Submit").click()
    expect(stale.get_by_role("alert")).to_contain_text("already decided")
    approvals.close()


def test_a_reply_queued_while_no_worker_runs_arrives_when_one_starts(page, start_worker, user):
    from playwright.sync_api import expect

    agent = make_agent(user)
    page.goto(f"/agentos/chat/{agent.public_id}/")
    send(page, "anyone there?")
    expect(page.locator(".msg.pending .status")).to_have_text("Queued — waiting for a worker…")

    start_worker()
    expect(page.locator(".msg.assistant .content").last).to_have_text("Echo #1: anyone there?")


def test_tokens_are_created_in_the_account_page_and_work_at_375_px(page, live_server, user):
    from playwright.sync_api import expect

    page.get_by_role("link", name="Account", exact=True).click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text()
    assert token.startswith("opie_")
    shot(page, "account")
    answer = httpx.get(f"{live_server.url}/api/v1/agentos/agents/", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200

    agent = make_agent(user)
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"/agentos/chat/{agent.public_id}/")
    expect(page.get_by_label("Message")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, "no sideways scrolling on a phone"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def test_a_schedule_is_made_from_its_preview_listed_and_run_now(page, user):
    from playwright.sync_api import expect

    make_agent(user, name="Digest")
    page.get_by_role("link", name="Schedules", exact=True).click()
    page.get_by_label("Name").fill("Morning summary")
    page.get_by_label("Message").fill("Summarise the new documents")
    page.get_by_label("Cron", exact=True).fill("0 8 * * 1-5")
    page.get_by_label("Timezone").fill("Europe/Paris")
    page.get_by_label("Starts").fill("2030-01-05T00:00")
    times = page.locator("#schedule-preview li")
    expect(times).to_have_count(5)  # the preview followed the typing, without a submit
    expect(times.first).to_have_text("Mon 2030-01-07 08:00 CET")
    expect(times.last).to_have_text("Fri 2030-01-11 08:00 CET")
    page.get_by_label("Cron", exact=True).fill("0 8 * *")
    expect(page.locator("#schedule-preview .error")).to_contain_text("expected 5 fields")
    page.get_by_label("Cron", exact=True).fill("0 8 * * 1-5")
    expect(times).to_have_count(5)

    page.get_by_role("button", name="Create schedule").click()
    row = page.locator("tr.schedule", has_text="Morning summary")
    expect(row).to_contain_text("Europe/Paris")
    expect(row.locator(".badge")).to_have_text("active")
    expect(row).to_contain_text("Mon 2030-01-07 08:00 CET")  # its next run, in its own timezone
    row.get_by_role("button", name="Run now").click()
    expect(row.get_by_role("status")).to_contain_text("Run started")  # the row swapped in place
    expect(row.get_by_role("link", name="its session")).to_be_visible()

    # the form again, to show a preview next to the list
    page.get_by_label("Name").fill("Inbox check")
    page.get_by_label("Message").fill("Anything urgent in the inbox?")
    page.get_by_label("at an interval").check()
    page.get_by_label("Every").fill("90")
    page.get_by_label("Timezone").fill("America/New_York")
    expect(page.locator("#schedule-preview")).to_contain_text("Next 5 runs (America/New_York)")
    shot(page, "schedules")

    row.get_by_role("link", name="Morning summary").click()
    history = page.locator("table.runs tbody tr")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("manual")
    expect(history.first.get_by_role("link", name="session")).to_be_visible()
