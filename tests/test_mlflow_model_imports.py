"""What ytmt.mlflow_model's docstring says it imports (issue 26 §3: it claimed no torch)."""

import subprocess
import sys


def test_logging_the_model_imports_torch_but_not_the_request_path():
    code = ("import sys, ytmt.mlflow_model; print(sorted(m for m in ('torch', 'mlflow', "
            "'ytmt.serving', 'ytmt.inference', 'ytmt.imageio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "['torch']"
