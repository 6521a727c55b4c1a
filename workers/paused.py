"""A paused agno run, to and from PostgreSQL (apps.jobs.actions holds the rows).

agno pauses a run before a tool that needs confirmation or user input
(`RunStatus.paused`, `RunOutput.requirements`). The worker stores the
`RunOutput` as JSON with the run's messages, one action per pending
requirement, and lets the job go. After the decisions, any worker rebuilds
the `RunOutput`, applies them to its requirements (confirm with the edited
arguments, reject with the note, provide the input), and `continue_run`s it,
streaming as a first run does. An approved call runs at most once: the tool
hook (`GatedCalls`) marks it started before the call, commits its result
after, and replays it on a later continue of the same pause.
"""
from __future__ import annotations

from typing import Any

from agno.run.agent import RunOutput

from apps.jobs.actions import action_run_finish, action_run_start, pause_decisions
from apps.jobs.models import ActionDecision, JobAction, RunPause

INTERRUPTED = ("The call was interrupted when its worker stopped, and was not run again "
               "(it may or may not have taken effect).")


def refused(note: str) -> str:
    """The tool result a model sees for a rejected call."""
    return f"The user refused this tool call: {note}" if note.strip() else "The user refused this tool call."


def pause_actions(output: Any) -> list[dict[str, Any]]:
    """The pending requirements of a paused run, as the actions a person decides."""
    actions = []
    for requirement in output.active_requirements:
        tool = requirement.tool_execution
        if requirement.needs_user_input:
            fields = [{"name": f.name, "type": getattr(f.field_type, "__name__", str(f.field_type)),
                       "description": f.description or ""} for f in requirement.user_input_schema or []]
            kind = JobAction.Type.INPUT
        else:
            fields, kind = [], JobAction.Type.APPROVE
        actions.append({"requirement_id": requirement.id, "tool_call_id": tool.tool_call_id or "",
                        "type": kind, "tool": tool.tool_name or "", "arguments": dict(tool.tool_args or {}),
                        "fields": fields})
    return actions


def pause_state(output: Any, sources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"run": output.to_dict(), "sources": sources}


def paused_run(pause: RunPause) -> tuple[Any, list[dict[str, Any]]]:
    """The stored run with every decision applied, ready for `continue_run`, and its sources."""
    output = RunOutput.from_dict(pause.run_state["run"])
    # from JSON, a requirement's tool call and the run's own list of calls are two copies: make them one
    calls = {tool.tool_call_id: tool for tool in output.tools or []}
    for requirement in output.requirements or []:
        if requirement.tool_execution is not None and requirement.tool_execution.tool_call_id in calls:
            requirement.tool_execution = calls[requirement.tool_execution.tool_call_id]
    requirements = {r.id: r for r in output.requirements or []}
    for action, decision in pause_decisions(pause=pause):
        found = requirements.get(action.requirement_id)
        if found is None or found.tool_execution is None or found.is_resolved():
            continue
        requirement = found
        if decision.decision == ActionDecision.Decision.INPUT:
            requirement.provide_user_input(decision.values or {})
        elif decision.decision == ActionDecision.Decision.APPROVED:
            requirement.tool_execution.tool_args = dict(decision.arguments_after)  # type: ignore[union-attr]
            requirement.confirm()
        else:
            requirement.reject(refused(decision.note))
    return output, list(pause.run_state.get("sources") or [])


class GatedCalls:
    """The approved (or answered) calls of the pause being continued, each run at most once."""

    def __init__(self, pause: RunPause | None) -> None:
        self._open: list[tuple[str, str, dict[str, Any]]] = []
        if pause is not None:
            for action, decision in pause_decisions(pause=pause):
                if decision.decision != ActionDecision.Decision.REJECTED:
                    self._open.append((action.public_id, action.tool, dict(decision.arguments_after)))

    def take(self, name: str, arguments: dict[str, Any]) -> str | None:
        """The action behind this call: the same tool with the same arguments, else the same tool."""
        for exact in (True, False):
            for index, (action_id, tool, expected) in enumerate(self._open):
                if tool == name and (not exact or expected == arguments):
                    del self._open[index]
                    return action_id
        return None

    @staticmethod
    def run(action_id: str, call: Any) -> Any:
        state, result = action_run_start(action_id=action_id)
        if state == "done":
            return result
        if state == "interrupted":
            return INTERRUPTED
        result = call()
        action_run_finish(action_id=action_id, result=str(result))
        return result
