"""Every Python example in README runs as written, in a fresh interpreter."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    block = BLOCKS[index]
    if "transformers4rec" in block:
        pytest.importorskip("transformers4rec.torch")
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTMASK_")}
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"README example {index}:\n{block}\n{result.stderr[-3000:]}"
