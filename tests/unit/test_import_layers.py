"""The import picture (docs/architecture.md): imports run one way —
entry points (``reta.cli``) → stages (``reta.squeeze|distill|evaluate|pipeline|report``) → synthesis / training /
reporting → data / models / topology / utils. Stages import no synthesis wing (only the synthesis top level:
registry, runtime, distributed set-up; ``reta.report`` reads RETA's diagnostics); the synthesis top level imports no
wing. Wings of ``reta.synthesis`` do not import each other except RETA, which plugs into the BN family; the BN family
never imports RETA; no module loads another through importlib.

Every ``import`` statement is read with :mod:`ast` (function-level imports included), so an import running back up
fails here with the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "reta"
STAGES = {"reta.squeeze", "reta.experts", "reta.distill", "reta.evaluate", "reta.pipeline", "reta.report"}
BASE = ("reta.data", "reta.models", "reta.topology", "reta.utils", "reta.errors")
WINGS = ("bn", "dm", "reta", "frozen", "process")


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "reta"]
    return found


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violation(src: str, dst: str) -> str | None:
    """The rule ``src`` importing ``dst`` breaks, or None."""
    if dst in ("importlib",) or dst.startswith("importlib."):
        return "no importlib registries: plug-ins are Hydra _target_ strings"
    if not within(dst, "reta") or dst == "reta":
        return None
    if within(dst, "reta.cli") and not within(src, "reta.cli"):
        return "only entry points import reta.cli"
    if within(dst, *STAGES) and not within(src, "reta.cli") and src != "reta.pipeline":
        return "stages are imported by entry points (and the pipeline) only"
    if within(src, *BASE) and not within(dst, *BASE):
        return "data/models/topology/utils import only each other"
    if within(src, "reta.reporting") and within(dst, "reta.synthesis", "reta.training"):
        return "reporting reads results; it imports no synthesis and no training"
    if within(src, "reta.evaluation") and within(dst, "reta.synthesis", "reta.reporting"):
        return "evaluation (protocol evaluators) reads distilled sets; it imports no synthesis and no reporting"
    if within(src, "reta.training") and within(dst, "reta.synthesis", "reta.evaluation"):
        return "training (teachers, students, probes) does not import synthesis"
    # reta.report draws RETA's topology diagnostics (reta.synthesis.reta.diagnostics): the one stage that reads a wing
    if within(src, *(STAGES - {"reta.report"})) and within(dst, *(f"reta.synthesis.{w}" for w in WINGS)):
        return "stages reach the synthesis wings only through method configs (synthesis top level: registry, runtime)"
    if within(src, "reta.synthesis"):
        parts = src.split(".")
        own = parts[2] if len(parts) > 3 and parts[2] in WINGS else None
        dparts = dst.split(".")
        other = dparts[2] if len(dparts) > 2 and dparts[1] == "synthesis" and dparts[2] in WINGS else None
        if other is not None and other != own and not (own == "reta" and other == "bn"):
            return f"synthesis wings do not import each other ({own or 'synthesis top'} → {other})"
    return None


def test_imports_run_one_way():
    bad = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40
    for path in files:
        src = module_name(path)
        for line, dst in imports(path):
            rule = violation(src, dst)
            if rule:
                bad.append(f"{path.relative_to(SRC.parent)}:{line} imports {dst}: {rule}")
    assert not bad, "\n".join(bad)


def test_the_rules_catch_a_backward_import():
    assert violation("reta.synthesis.bn.family", "reta.synthesis.reta.drc")
    assert violation("reta.reporting.plots", "reta.synthesis.bn.module")
    assert violation("reta.data.registry", "reta.training.common")
    assert violation("reta.evaluate", "reta.squeeze")
    assert violation("reta.synthesis.registry", "importlib")
    assert violation("reta.synthesis.reta.pta", "reta.synthesis.bn.module") is None
    assert violation("reta.pipeline", "reta.distill") is None
    assert violation("reta.distill", "reta.synthesis.bn.sharding")
    assert violation("reta.synthesis.runtime", "reta.synthesis.bn.init")
    assert violation("reta.pipeline", "reta.synthesis.distributed") is None
    assert violation("reta.evaluation.students", "reta.synthesis.bn.module")
    assert violation("reta.training.student", "reta.evaluation.sets")
    assert violation("reta.evaluate", "reta.evaluation.students") is None
    # the evaluation add-ons and the continual protocol: evaluators share the students' pieces, never a stage's
    assert violation("reta.evaluation.continual", "reta.evaluation.students") is None
    assert violation("reta.evaluation.continual", "reta.evaluate")
    assert violation("reta.evaluation.robustness", "reta.reporting.robustness")
    assert violation("reta.evaluation.addons", "reta.synthesis.registry")
    assert violation("reta.data.corruptions", "reta.evaluation.robustness")
    # DD-Ranking, robustness and continual reporting read metrics.json only
    assert violation("reta.reporting.ddranking", "reta.training.student")
