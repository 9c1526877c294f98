"""The benchmarks' child scripts compile: ``make test`` skips the benchmarks, so a script broken by an edit
(an import pasted at the wrong indentation broke ``MEMORY_CHILD`` once) would otherwise surface only in
``make bench``."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

BENCH = sorted((ROOT / "tests" / "bench").glob("test_*.py"))


def _child_scripts() -> list[tuple[str, str]]:
    scripts = []
    for path in BENCH:
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and "import " in node.value.value
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        scripts.append((f"{path.stem}.{target.id}", node.value.value))
    return scripts


SCRIPTS = _child_scripts()


def test_the_bench_child_scripts_are_found() -> None:
    assert {"test_pipeline_bench.MEMORY_CHILD", "test_scale_bench.CHILD"} <= {name for name, _ in SCRIPTS}


@pytest.mark.parametrize(("name", "source"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_each_child_script_compiles(name: str, source: str) -> None:
    compile(source, name, "exec")
