"""Runtime of ``verify_model`` at the battery's defaults on tiny BERT-style models (random weights).

    .venv/bin/python benchmarks/verify_model.py [--repeat N]

Subjects (tests/fixtures/models_transformers.py): the tiny BERT of the tests (hidden 32, 2 layers,
7 sites) on a batch of 8 x 16 tokens and on 2 x 8 tokens (small activations: draws capped at
2000), and a BERT-style model of hidden 64, 4 layers, 4 heads (13 sites: embeddings + 3 per
layer) on 8 x 16 tokens. Goal: under 30 s for the 13-site model on 2 cores. Prints wall time,
CPU time of this process, the number of sites and the slowest site; the machine's load average
is printed too, since other jobs share the cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys
import time

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def _fixture(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per subject; the fastest is kept")
    args = parser.parse_args(argv)
    from stats_dropout.verification.models import verify_model

    models = _fixture("models_transformers")
    subjects = [
        ("tiny BERT h32 L2, batch 8x16", lambda: models.tiny_bert()),
        ("tiny BERT h32 L2, batch 2x8", lambda: models.tiny_bert(batch=2, length=8)),
        ("BERT-style h64 L4, batch 8x16", models.bert12),
    ]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'subject':32} {'sites':>5} {'passed':>6} {'wall s':>7} {'cpu s':>7}  slowest site")
    for title, factory in subjects:
        best = None
        for _ in range(args.repeat):
            model, batch = factory()
            wall, cpu = time.perf_counter(), time.process_time()
            result = verify_model(model, batch, seed=0)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if best is None or wall < best[0]:
                best = (wall, cpu, result)
        wall, cpu, result = best
        slowest = max(result.rows, key=lambda r: r.seconds)
        print(f"{title:32} {len(result.rows):>5} {str(result.passed):>6} {wall:>7.1f} {cpu:>7.1f}  "
              f"{slowest.path} ({slowest.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
