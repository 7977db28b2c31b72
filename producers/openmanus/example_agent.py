"""A trivial OpenManus tool and agent, for ops/openmanus_example.py and the tests."""

from __future__ import annotations

from typing import Any

from app.agent.toolcall import ToolCallAgent
from app.tool import Terminate, ToolCollection
from app.tool.base import BaseTool


class EchoTool(BaseTool):  # type: ignore[misc]
    """Returns its text upper-cased: proof that the tool ran and its result came back."""

    name: str = "echo"
    description: str = "Echo a text back, upper-cased."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "The text to echo."}},
        "required": ["text"],
    }
    calls: list[str] = []

    async def execute(self, text: str = "", **_: Any) -> str:
        self.calls.append(text)
        return text.upper()


def echo_agent(llm: Any = None, *, max_steps: int = 5, **fields: Any) -> ToolCallAgent:
    """A ToolCallAgent with `echo` and `terminate`; `llm=None` takes OpenManus' registry."""
    tools = ToolCollection(EchoTool(calls=[]), Terminate())
    extra = {"llm": llm} if llm is not None else {}
    return ToolCallAgent(available_tools=tools, max_steps=max_steps, **extra, **fields)


def echo_tool(agent: ToolCallAgent) -> EchoTool:
    tool = agent.available_tools.tool_map["echo"]
    assert isinstance(tool, EchoTool)
    return tool
