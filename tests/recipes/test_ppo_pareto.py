import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).parents[2] / "recipes" / "ppo_pareto.py"


def test_main_job_builds_the_default_data(tmp_path):
    data = tmp_path / "procedural"
    result = subprocess.run([sys.executable, str(RECIPE), "--data", str(data), "--num-clips", "12"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (data / "train.txt").is_file() and (data / "Mean.npy").is_file()
    assert "not implemented yet" in result.stdout
