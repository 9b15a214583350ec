"""client.beta.files and client.beta.sessions.resources, through the official SDK.

Goal: the Files API (upload, metadata, list by cursor and scope, download,
delete) and session resources (files mounted at creation and added, listed,
retrieved and deleted later) answer the SDK in strict mode; and the job a user
gives an agent works end to end: upload a CSV and a PDF, start a session that
mounts them, let the agent produce a report in /mnt/session/outputs, and get
the report back with `files.list(scope_id=...)` and `files.download`.

Method: the plain conformance server for the API surface; for the end-to-end
job, a server with the real sandboxed tools and the scripted fake model: the
model reads the CSV and the PDF with the read tool and bash and writes the
report with the write tool; and the echo-tools runner server for the outputs
capture details (the test writes files into the outputs directory itself).
Expected behaviour: managed-agents-api.md §2.6, §3.4; managed-agents-behaviour.md
§6.1 (outputs become files scoped to the session, shortly after the idle).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, List

import anthropic
import pytest

from helpers import MODEL, unique, user_message
from runner_conftest_helpers import (  # noqa: F401 - fixtures are found by name
    TURN_DEADLINE_S,
    Harness,
    count,
    fake_model,
    first,
    harness,
    make_runner_client,
    runner_client,
    runner_env,
    runner_server,
    sandbox_harness,
    sandbox_server,
    text_response,
    tool_response,
    types,
)

MANAGED_AGENTS = ["managed-agents-2026-04-01"]
CSV = b"region,q1,q2\nnorth,10,12\nsouth,7,11\n"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
REPORT = "# Sales report\n\nnorth: 10 -> 12\nsouth: 7 -> 11\n"
WRITE_REPORT = {
    "type": "custom",
    "name": "write_report",
    "description": "Write a report file into the session's outputs",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
}


# --------------------------------------------------------------------------- the Files API


def test_upload_metadata_list_delete(client: anthropic.Anthropic) -> None:
    uploaded = client.beta.files.upload(file=("sales.csv", CSV, "text/csv"))
    assert uploaded.type == "file"
    assert uploaded.id.startswith("file_")
    assert uploaded.filename == "sales.csv"
    assert uploaded.mime_type == "text/csv"
    assert uploaded.size_bytes == len(CSV)
    assert uploaded.downloadable is False
    assert uploaded.scope is None
    assert uploaded.expires_at is None

    meta = client.beta.files.retrieve_metadata(uploaded.id)
    assert meta == uploaded
    listed = [f.id for f in client.beta.files.list(limit=1000)]
    assert uploaded.id in listed
    by_id = client.beta.files.list(ids=[uploaded.id, "file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E"])
    assert [f.id for f in by_id.data] == [uploaded.id]
    assert by_id.next_page is None

    # Uploaded files are not downloadable, as on the hosted service.
    with pytest.raises(anthropic.BadRequestError) as err:
        client.beta.files.download(uploaded.id)
    assert err.value.error_code == "file_not_downloadable"

    deleted = client.beta.files.delete(uploaded.id)
    assert deleted.id == uploaded.id
    assert deleted.type == "file_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.files.retrieve_metadata(uploaded.id)


def test_list_pages_with_the_sdk_cursor(client: anthropic.Anthropic) -> None:
    ids = [client.beta.files.upload(file=(f"page-{n}.txt", f"{n}".encode(), "text/plain")).id for n in range(5)]
    page = client.beta.files.list(limit=2)
    assert len(page.data) == 2 and page.next_page and page.next_page.startswith("page_")
    seen = [f.id for f in client.beta.files.list(limit=2)]  # auto-pages
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen)), "no file is listed twice"


def test_expiring_upload(client: anthropic.Anthropic) -> None:
    uploaded = client.beta.files.upload(file=("soon.txt", b"x", "text/plain"), expires_in_seconds=3600)
    assert uploaded.expires_at is not None
    assert round((uploaded.expires_at - uploaded.created_at).total_seconds()) == 3600
    with pytest.raises(anthropic.BadRequestError):
        client.beta.files.upload(file=("bad.txt", b"x", "text/plain"), expires_in_seconds=10)


def test_scope_listing_needs_the_managed_agents_beta(client: anthropic.Anthropic, new_session) -> None:
    session = new_session()
    with pytest.raises(anthropic.BadRequestError):
        client.beta.files.list(scope_id=session.id)
    page = client.beta.files.list(scope_id=session.id, betas=MANAGED_AGENTS)
    assert page.data == []


# --------------------------------------------------------------------------- session resources


def test_resources_at_creation_and_on_a_session(client: anthropic.Anthropic, new_session) -> None:
    csv = client.beta.files.upload(file=("sales.csv", CSV, "text/csv"))
    pdf = client.beta.files.upload(file=("q1.pdf", PDF, "application/pdf"))
    session = new_session(
        resources=[
            {"type": "file", "file_id": csv.id, "mount_path": "/data/sales.csv"},
            {"type": "file", "file_id": pdf.id},
        ]
    )
    assert [(r.type, r.file_id, r.mount_path) for r in session.resources] == [
        ("file", csv.id, "/mnt/session/uploads/data/sales.csv"),
        ("file", pdf.id, f"/mnt/session/uploads/{pdf.id}"),
    ]
    listed = list(client.beta.sessions.resources.list(session.id))
    assert [r.id for r in listed] == [r.id for r in session.resources]

    added = client.beta.sessions.resources.add(session.id, type="file", file_id=csv.id, mount_path="copy.csv")
    assert added.type == "file"
    assert added.mount_path == "/mnt/session/uploads/copy.csv"
    got = client.beta.sessions.resources.retrieve(added.id, session_id=session.id)
    assert got.id == added.id and got.type == "file"
    assert len(list(client.beta.sessions.resources.list(session.id, limit=1))) == 3
    deleted = client.beta.sessions.resources.delete(added.id, session_id=session.id)
    assert (deleted.id, deleted.type) == (added.id, "session_resource_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.resources.retrieve(added.id, session_id=session.id)
    assert len(client.beta.sessions.retrieve(session.id).resources) == 2


def test_resource_errors(client: anthropic.Anthropic, new_session) -> None:
    csv = client.beta.files.upload(file=("sales.csv", CSV, "text/csv"))
    session = new_session()
    for path in ["../escape.csv", "/workspace/app.py", "/mnt/session/outputs/x.csv"]:
        with pytest.raises(anthropic.BadRequestError):
            client.beta.sessions.resources.add(session.id, type="file", file_id=csv.id, mount_path=path)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.resources.add(session.id, type="file", file_id="file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E")
    with pytest.raises(anthropic.NotFoundError):
        new_session(resources=[{"type": "file", "file_id": "file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E"}])


def test_repository_resources_hide_their_token_and_rotate_it(client: anthropic.Anthropic, new_session) -> None:
    token = "ghp_sdk_canary_token"
    session = new_session(
        resources=[
            {
                "type": "github_repository",
                "url": "https://github.com/octo-org/parser",
                "authorization_token": token,
                "checkout": {"type": "branch", "name": "main"},
            }
        ]
    )
    (repo,) = session.resources
    assert repo.type == "github_repository"
    assert repo.mount_path == "/workspace/parser"
    assert repo.checkout is not None and repo.checkout.type == "branch" and repo.checkout.name == "main"
    assert token not in session.model_dump_json()
    rotated = client.beta.sessions.resources.update(repo.id, session_id=session.id, authorization_token="ghp_new")
    assert rotated.id == repo.id and rotated.type == "github_repository"
    assert rotated.updated_at >= repo.updated_at
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.resources.delete(repo.id, session_id=session.id)


# --------------------------------------------------------------------------- the job, end to end


def _outputs_file(client: anthropic.Anthropic, session_id: str, name: str) -> Any:
    """Waits (deadline TURN_DEADLINE_S) for the session's output `name` to be listed."""
    deadline = time.monotonic() + TURN_DEADLINE_S
    while True:
        files = list(client.beta.files.list(scope_id=session_id, betas=MANAGED_AGENTS))
        found = [f for f in files if f.filename == name]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"{name} was not captured from the outputs of {session_id}; listed: {files}")
        time.sleep(0.05)


def test_upload_mount_report_and_download(harness: Harness) -> None:
    h = harness
    client = h.client
    data_dir = h.server.data_dir
    assert data_dir is not None
    csv = client.beta.files.upload(file=("sales.csv", CSV, "text/csv"))
    pdf = client.beta.files.upload(file=("q1.pdf", PDF, "application/pdf"))
    h.fake.set_script(
        [
            tool_response(("toolu_report", "write_report", {"path": "report.md", "content": REPORT})),
            text_response("The report is in /mnt/session/outputs/report.md."),
        ]
    )
    agent = client.beta.agents.create(name=unique("analyst"), model=MODEL, tools=[WRITE_REPORT])  # type: ignore[list-item]
    session = client.beta.sessions.create(
        agent=agent.id,
        environment_id=h.env_id,
        resources=[
            {"type": "file", "file_id": csv.id, "mount_path": "/data/sales.csv"},
            {"type": "file", "file_id": pdf.id, "mount_path": "/data/q1.pdf"},
        ],
    )
    h.sessions.append(session.id)
    assert [r.mount_path for r in session.resources] == [
        "/mnt/session/uploads/data/sales.csv",
        "/mnt/session/uploads/data/q1.pdf",
    ]
    session_dir = Path(data_dir) / "sandboxes" / session.id
    assert (session_dir / "uploads/data/sales.csv").read_bytes() == CSV
    assert (session_dir / "uploads/data/q1.pdf").read_bytes() == PDF

    reader = h.open_stream(session.id)
    h.send(session.id, user_message("Summarize /mnt/session/uploads/data/sales.csv into a report."))
    events = h.wait_idles(reader, 1)
    tool_use = first(events, "agent.custom_tool_use")
    assert tool_use.name == "write_report"
    assert events[-1].stop_reason.type == "requires_action"

    # The tool, run by the client: the report goes to the outputs directory.
    # (Written aside and renamed in: a capture after the first idle may run
    # at any moment and must see the whole report or none of it.)
    outputs = session_dir / "outputs"
    staged = session_dir / "report.tmp"
    staged.write_text(tool_use.input["content"])
    os.replace(staged, outputs / tool_use.input["path"])
    h.send(
        session.id,
        {
            "type": "user.custom_tool_result",
            "custom_tool_use_id": tool_use.id,
            "content": [{"type": "text", "text": "written"}],
        },
    )
    events = h.wait_idles(reader, 2)
    assert events[-1].stop_reason.type == "end_turn"
    assert count(events, "agent.message") == 1

    report = _outputs_file(client, session.id, "report.md")
    assert report.downloadable is True
    assert report.scope is not None and report.scope.type == "session" and report.scope.id == session.id
    assert report.mime_type == "text/markdown"
    assert report.size_bytes == len(REPORT.encode())
    assert client.beta.files.download(report.id).read() == REPORT.encode()
    # Inputs are not outputs: the session's scope lists only what it produced.
    scoped = [f.id for f in client.beta.files.list(scope_id=session.id, betas=MANAGED_AGENTS)]
    assert csv.id not in scoped and pdf.id not in scoped
    # The report is captured once, however many idles follow: a new file
    # written before the next idle shows that capture ran, and the report is
    # still listed once.
    staged.write_text("north grew\n")
    os.replace(staged, outputs / "notes.txt")
    h.fake.set_script([text_response("Nothing new.")])
    h.send(session.id, user_message("anything else?"))
    h.wait_idles(reader, 3)
    _outputs_file(client, session.id, "notes.txt")
    names: List[str] = [f.filename for f in client.beta.files.list(scope_id=session.id, betas=MANAGED_AGENTS)]
    assert sorted(names) == ["notes.txt", "report.md"], names


def test_the_agent_reads_the_mounted_files_and_writes_the_report_itself(sandbox_harness: Harness) -> None:
    # The job, with nothing done on the agent's behalf: the model's
    # read, bash and write calls run in the session's sandbox.
    h = sandbox_harness
    client = h.client
    csv = client.beta.files.upload(file=("sales.csv", CSV, "text/csv"))
    pdf = client.beta.files.upload(file=("q1.pdf", PDF, "application/pdf"))
    h.fake.set_script(
        [
            tool_response(("toolu_read", "read", {"file_path": "/mnt/session/uploads/data/sales.csv"})),
            tool_response(
                ("toolu_bash", "bash", {"command": "wc -l < /mnt/session/uploads/data/sales.csv; head -c 8 /mnt/session/uploads/data/q1.pdf"})
            ),
            tool_response(("toolu_pdf", "read", {"file_path": "/mnt/session/uploads/data/q1.pdf"})),
            tool_response(("toolu_write", "write", {"file_path": "/mnt/session/outputs/report.md", "content": REPORT})),
            text_response("The report is in /mnt/session/outputs/report.md."),
        ]
    )
    toolset = {"type": "agent_toolset_20260401"}
    agent = client.beta.agents.create(name=unique("analyst"), model=MODEL, tools=[toolset])  # type: ignore[list-item]
    session = client.beta.sessions.create(
        agent=agent.id,
        environment_id=h.env_id,
        resources=[
            {"type": "file", "file_id": csv.id, "mount_path": "/data/sales.csv"},
            {"type": "file", "file_id": pdf.id, "mount_path": "/data/q1.pdf"},
        ],
    )
    h.sessions.append(session.id)
    reader = h.open_stream(session.id)
    h.send(session.id, user_message("Summarize /mnt/session/uploads/data/sales.csv and q1.pdf into a report."))
    events = h.wait_idles(reader, 1)
    assert events[-1].stop_reason.type == "end_turn", types(events)
    results = {r.tool_use_id: r for r in events if r.type == "agent.tool_result"}
    uses = {u.input.get("file_path") or u.input.get("command"): u for u in events if u.type == "agent.tool_use"}
    assert len(results) == 4, types(events)
    for use in uses.values():
        assert results[use.id].is_error is False, results[use.id]
    read_csv = results[uses["/mnt/session/uploads/data/sales.csv"].id]
    assert "north,10,12" in read_csv.content[0].text
    bash = next(r for u, r in ((u, results[u.id]) for u in uses.values()) if u.name == "bash")
    assert bash.content[0].text.startswith("3\n%PDF-1.4"), bash.content[0].text
    read_pdf = results[uses["/mnt/session/uploads/data/q1.pdf"].id]
    assert read_pdf.content[0].type == "document"
    # The report, written by the agent, comes back as a session-scoped file.
    report = _outputs_file(client, session.id, "report.md")
    assert report.downloadable is True
    assert client.beta.files.download(report.id).read() == REPORT.encode()
