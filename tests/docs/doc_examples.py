"""The examples of README.md and docs/*.md, read from the Markdown (importable as `doc_examples`).

What counts as an example:
- every command line of a ```sh, ```bash, ```shell or ```console block (console: the `$ ` lines),
  with backslash continuations joined and a here-document kept with its command;
- every inline `code span` that starts with `mosquitto_pub`, `mosquitto_sub`, `mosquitto_rr` or
  `edge-agent`;
- every ```json block (one JSON value, several JSON lines, or `topic: T` then JSON);
- every inline JSON request (`{"id": ..., "args": ...}`) and every `args` cell of a command table
  (a row whose first cell names commands and whose second is a JSON object).
TOML blocks are configs: tests/config/test_documented_configs.py validates each of them.
Blocks without a language (output shown, trees) are no examples.

A command is a synopsis, not an example, when it holds placeholders: `[optional]`, `(a | b)`,
`<name>`, `...`, or an upper-case word (`FILE`, `HOST:PORT`, `models/NAME`); a synopsis is
checked against the real `--help`, an example is run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGS = {"sh", "bash", "shell", "console"}
COMMAND_PROGRAMS = ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr", "edge-agent")
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`]+)`")
# A span that runs a program: `edge-agent` alone or with words, a Mosquitto client with a topic
# (`mosquitto_pub -l` in prose names an option, `edge-agent-<id>` a client id).
_COMMAND_SPAN = re.compile(r"^(edge-agent(\s|$)|mosquitto_(pub|sub|rr)\s.*-t\s)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")
_PLACEHOLDER = re.compile(r"\[|\]|\(|\)|<[a-z_]+>|\.\.\.|(?<![A-Za-z0-9_])[A-Z]{1,}(?![a-z0-9])")


@dataclass(frozen=True)
class Example:
    """One example: where it is, what kind, its text, and the heading it sits under."""

    path: str
    line: int
    kind: str  # "command", "json", "request" (inline JSON), "args" (a command table cell)
    text: str
    heading: str
    commands: tuple[str, ...] = ()  # "request"/"args": the command(s) it is for

    @property
    def where(self) -> str:
        """`file:line`, for failure messages."""
        return f"{self.path}:{self.line}"


def documents() -> list[Path]:
    """README.md and every docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def is_synopsis(command: str) -> bool:
    """True when the command holds placeholders (see the module docstring)."""
    words = _tokens(command)
    if words[:1] == ["edge-agent"] and all(re.fullmatch(r"[a-z][a-z-]*", w) for w in words):
        return True  # a command named in prose (`edge-agent models verify`): a name to check
    for token in words:
        if token.startswith(("-", "<<", "|")):
            continue  # an option (`-W 2`), a here-document, a pipe
        if "=" in token:
            continue  # an environment assignment or a JSON payload
        if token.startswith(("{", "'{", '"{')):
            continue
        if _PLACEHOLDER.search(token):
            return True
    return False


def program(command: str) -> str:
    """The program a command line runs first (after environment assignments)."""
    for token in _tokens(command):
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", token):
            continue
        return token
    return ""


def extract(path: Path) -> list[Example]:
    """Every example of one Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    rel = str(path.relative_to(REPO))
    found: list[Example] = []
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(_blank_fences(text))]

    def heading_at(pos: int) -> str:
        return next((h for start, h in reversed(headings) if start <= pos), "")

    for m in _FENCE.finditer(text):
        lang, body = m.group(1).lower(), m.group(2)
        first = text.count("\n", 0, m.start()) + 2  # the line after the fence
        if lang in SHELL_LANGS:
            for offset, cmd in shell_commands(body, console=lang == "console"):
                found.append(Example(rel, first + offset, "command", cmd, heading_at(m.start())))
        elif lang == "json":
            found.append(Example(rel, first, "json", body, heading_at(m.start())))
    prose = _blank_fences(text)
    for para in re.finditer(r"(?:[^\n]+\n?)+", prose):
        found.extend(_inline(para.group(0), para.start(), text, rel, heading_at(para.start())))
    return sorted(found, key=lambda e: e.line)


def shell_commands(body: str, *, console: bool = False) -> list[tuple[int, str]]:
    """(line offset, command) of a shell block: continuations joined, here-documents kept."""
    lines = body.splitlines()
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        start, line = i, lines[i]
        i += 1
        if console:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        here = _HEREDOC.search(line)
        if here:
            end = here.group(1)
            while i < len(lines) and lines[i].strip() != end:
                line += "\n" + lines[i]
                i += 1
            line += "\n" + end
            i += 1
        out.append((start, line))
    return out


def _inline(para: str, offset: int, text: str, rel: str, heading: str) -> list[Example]:
    """Inline commands, inline JSON requests and command-table `args` cells of one paragraph."""
    found: list[Example] = []
    spans = list(_INLINE.finditer(para))
    topics = [s.group(1) for s in spans if "/cmd/" in s.group(1)]
    for s in spans:
        span = " ".join(s.group(1).split())
        line = text.count("\n", 0, offset + s.start()) + 1
        if _COMMAND_SPAN.match(span):
            found.append(Example(rel, line, "command", span, heading))
        elif span.startswith('{"id"') and '"args"' in span:
            cmds = tuple(t.rsplit("/cmd/", 1)[1] for t in topics)
            found.append(Example(rel, line, "request", span, heading, cmds))
    for row in re.finditer(r"^\|(.+)\|[ \t]*$", para, re.MULTILINE):
        cells = [c.strip() for c in row.group(1).split("|")]
        if len(cells) < 2 or not cells[1].startswith("`{"):
            continue
        cmds = tuple(re.findall(r"`([a-z][\w.]*)`", cells[0]))
        args = re.match(r"`([^`]+)`", cells[1])
        if cmds and args:
            line = text.count("\n", 0, offset + row.start()) + 1
            found.append(Example(rel, line, "args", args.group(1), heading, cmds))
    return found


def _blank_fences(text: str) -> str:
    """The text with fenced blocks blanked out, every offset kept."""
    return _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _tokens(command: str) -> list[str]:
    try:
        return shlex.split(command.split("\n", 1)[0], comments=True)
    except ValueError:
        return command.split()


def all_examples() -> list[Example]:
    """Every example of every document."""
    return [e for doc in documents() for e in extract(doc)]
