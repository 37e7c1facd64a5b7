"""`mscg train`'s start-up line says how the training windows go into steps as they do: never more windows a step
than there are windows."""

from __future__ import annotations

import re

import pytest

from tests.helpers import TINY_GENERATOR, Pipeline, build_tiny_pipeline, invoke, one_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("train"), generator=False, sasrec=False)


@pytest.mark.parametrize("batch_size", ["8", "4096"])
def test_the_windows_a_step_are_at_most_the_windows(pipe, tmp_path, batch_size):
    result = invoke("train", "-d", pipe.data, "--codes", pipe.codes, "-o", tmp_path / "gen", *TINY_GENERATOR,
                    "--batch-size", batch_size)
    assert result.exit_code == 0, result.output
    found = re.search(r"targets in (\d+) windows \(((\d+) windows a step|all in one step)\)", result.stderr)
    assert found, result.stderr
    windows = int(found.group(1))
    if batch_size == "8":
        assert 1 <= int(found.group(3)) < windows
    else:
        assert found.group(2) == "all in one step"
