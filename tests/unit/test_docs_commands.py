"""Every `reta-*` command the README and docs/*.md show composes (what `--cfg job` does: group choices checked by the
entry point, then Hydra composition; a sweep composes with its first value), and the table targets of the Makefile
never write over a committed file."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from reta.cli.common import check_group_choices

from helpers import CONF_DIR, REPO

PRIMARY = {"reta-squeeze": "squeeze", "reta-experts": "experts", "reta-distill": "distill", "reta-evaluate": "evaluate",
           "reta-run": "pipeline", "reta-report": "report"}
SCRIPT = r"(?:\S*/)?(reta-(?:squeeze|experts|distill|evaluate|run|report))(?:\s+(.*))?"
# a code line that runs a command (after environment assignments and `nice`), or an inline span that is one
LINE = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*(?:nice(?:\s+-n\s*\d+)?\s+)?" + SCRIPT + "$")
SPAN = re.compile("^" + SCRIPT + "$")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
INLINE = re.compile(r"`([^`\n]+)`")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shown_commands() -> list[tuple[str, str, str]]:
    """(page, script, argument string) of every command in a code block or an inline code span."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = FENCE.findall(text)
        spans = INLINE.findall(FENCE.sub("", text))
        lines = [re.split(r"\s#\s|\s#$", ln)[0] for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
        for regex, texts in ((LINE, lines), (SPAN, spans)):
            for text in texts:
                m = regex.match(text.strip())
                cmd = m and (page.name, m.group(1), (m.group(2) or "").strip().rstrip("&").strip())
                if cmd and cmd[1:] not in {c[1:] for c in found}:  # a command shown twice is composed once
                    found.append(cmd)
    return found


def overrides(args: str) -> list[str] | None:
    """The Hydra overrides of a shown argument string, sweeps at their first value; None for a placeholder command
    (``…``, ``<name>``) that is not meant to run as written."""
    try:
        tokens = shlex.split(args, comments=True)
    except ValueError:
        return None
    if any("…" in t or "..." in t or "<" in t or re.search(r"\$(?!\{)", t) for t in tokens):
        return None  # a placeholder or a shell variable
    kept, skip = [], False
    for t in tokens:
        if skip or t in ("-m", "--multirun"):
            skip = False
            continue
        if t in ("--cfg", "-c"):
            skip = True
            continue
        assert "=" in t or t.startswith("~"), f"not a Hydra override: {t!r} in {args!r}"
        kept.append(t)
    out = []
    for raw, parsed in zip(kept, OverridesParser.create().parse_overrides(kept)):
        if parsed.is_sweep_override():
            first = next(iter(parsed.sweep_string_iterator()))
            out.append(f"{raw.split('=', 1)[0]}={first}")
        else:
            out.append(raw)
    return out


COMMANDS = shown_commands()


def test_the_pages_show_commands_of_every_stage():
    scripts = {s for _, s, _ in COMMANDS}
    assert scripts == set(PRIMARY), scripts
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("page,script,args", COMMANDS, ids=[f"{p}:{s} {a[:50]}" for p, s, a in COMMANDS])
def test_a_shown_command_composes(page, script, args):
    ov = overrides(args)
    if ov is None:
        pytest.skip("a placeholder command")
    method = next((o.split("=", 1)[1] for o in ov if o.startswith("method=")), None)
    if method and not (Path(CONF_DIR) / "method" / f"{method}.yaml").exists():
        assert f"name: {method}\n" in (REPO / "docs" / page).read_text(), f"unknown method {method}"  # written there
        pytest.skip(f"{page} shows how to add method {method}; its own test runs that example")
    check_group_choices(ov)  # what the console script checks first (an unknown option exits 2 with one line)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        compose(PRIMARY[script], ov)


def test_a_misspelt_command_fails_here():
    """The check above can fail: a wrong group option and an unknown key are caught."""
    with pytest.raises(SystemExit):
        check_group_choices(overrides("method=fadrmm ipc=10"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"), pytest.raises(Exception, match="ipcc"):
        compose("distill", overrides("method=fadrm ipcc=10"))


@pytest.mark.parametrize("target", [["table1"], ["table1", "SCALE=paper"], ["table2"], ["table3"], ["table4"], ["fig4"],
                                    ["fig6"], ["published"]])
def test_table_targets_never_write_over_a_committed_file(target):
    """`make <target>` (dry run) writes its reports to fresh paths: no `out=` of reta-report names a tracked file."""
    dry = subprocess.run(["make", "-n", "-s", *target, "BIN=.venv/bin"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    outs = re.findall(r"reta-report .*?\bout=(\S+)", dry)
    assert outs, dry
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for out in outs:
        clash = [f for f in tracked if f.startswith(out + ".") or f.startswith(out + "/")]
        assert not clash, f"make {' '.join(target)} would write over {clash}"
        assert out.startswith("outputs/"), out
