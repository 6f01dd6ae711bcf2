"""Every framework dropout layer through ``sd.verify_dropout(layer)``: verdicts, failing checks, time, glue.

Usage::

    KERAS_BACKEND=jax python benchmarks/framework_matrix.py [--quick] [--seed 0] [--out docs/FRAMEWORKS.md]

Each row builds one layer at one keep probability (keep_prob = 1 − the framework's rate) and one
dtype and runs the battery at its defaults (false-fail rate 1e-6). "glue" counts the lines of user
code needed besides ``sd.verify_dropout(layer)`` (goal 0): 1 for an ``example_input=`` in a
dtype the layer does not declare, for choosing a torch input rank (``ndim=``) or for wrapping a
function (``from_jax``). The table is printed and written between the matrix markers of
docs/FRAMEWORKS.md. Frameworks that are not installed are listed as skipped. Outcomes are
recorded as they are: a correct layer can fail on a check's false alarm (see FRAMEWORKS.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")  # keras reads it once, at its first import

import numpy as np  # noqa: E402

import stats_dropout as sd  # noqa: E402
from stats_dropout.reference.probes import probe_shape, scheme_probe  # noqa: E402

KEEP_PROBS = (0.8, 0.5, 0.3)
ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def have(module):
    return importlib.util.find_spec(module) is not None


def probe_like(impl, dtype):
    """The layer's default probe in another dtype (one glue line: ``example_input=``)."""
    if impl.example_input is not None:
        return np.asarray(impl.example_input).astype(dtype)
    return scheme_probe(probe_shape(impl.shared_axes), seed=0).astype(dtype)


def torch_rows():
    import torch

    nn = torch.nn
    for cls in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"):
        for p in KEEP_PROBS:
            yield "torch", f"nn.{cls}", p, "float32", 0, lambda c=cls, p=p: getattr(nn, c)(1 - p)
    yield "torch", "nn.Dropout(inplace=True)", 0.8, "float32", 0, lambda: nn.Dropout(0.2, inplace=True)
    for cls, ndim in (("Dropout1d", 2), ("Dropout2d", 3), ("Dropout3d", 4), ("FeatureAlphaDropout", 4)):
        yield ("torch", f"nn.{cls}, unbatched {ndim}-D input", 0.8, "float32", 1,
               lambda c=cls, n=ndim: sd.adapters.implementation(getattr(nn, c)(0.2), ndim=n))
    for cls in ("Dropout", "Dropout2d"):
        yield ("torch", f"nn.{cls}", 0.8, "float16", 1,
               lambda c=cls: _with_dtype(sd.adapters.implementation(getattr(nn, c)(0.2)), np.float16))


def _with_dtype(impl, dtype):
    import dataclasses

    return dataclasses.replace(impl, example_input=probe_like(impl, dtype), dtype=None)


def flax_rows():
    from flax import linen, nnx

    for p in KEEP_PROBS:
        yield "flax", "nnx.Dropout", p, "float32", 0, lambda p=p: nnx.Dropout(1 - p)
        yield "flax", "nnx.Dropout(broadcast_dims=(1,))", p, "float32", 0, lambda p=p: nnx.Dropout(
            1 - p, broadcast_dims=(1,))
        yield "flax", "linen.Dropout", p, "float32", 0, lambda p=p: linen.Dropout(1 - p)
    yield "flax", "nnx.Dropout", 0.8, "float16", 1, lambda: _with_dtype(sd.adapters.implementation(
        nnx.Dropout(0.2)), np.float16)


def keras_rows():
    import keras

    L = keras.layers
    makers = {
        "Dropout": lambda r, **k: L.Dropout(r, **k),
        "Dropout(noise_shape=(None, 1, 8))": lambda r, **k: L.Dropout(r, noise_shape=(None, 1, 8), **k),
        "SpatialDropout1D": lambda r, **k: L.SpatialDropout1D(r, **k),
        "SpatialDropout2D (channels_last)": lambda r, **k: L.SpatialDropout2D(r, **k),
        "SpatialDropout2D (channels_first)": lambda r, **k: L.SpatialDropout2D(r, data_format="channels_first", **k),
        "SpatialDropout3D (channels_last)": lambda r, **k: L.SpatialDropout3D(r, **k),
        "SpatialDropout3D (channels_first)": lambda r, **k: L.SpatialDropout3D(r, data_format="channels_first", **k),
        "GaussianDropout": lambda r, **k: L.GaussianDropout(r, **k),
        "AlphaDropout": lambda r, **k: L.AlphaDropout(r, **k),
    }
    backend = keras.backend.backend()
    for name, make in makers.items():
        for p in KEEP_PROBS:
            yield f"keras ({backend})", name, p, "float32", 0, lambda m=make, p=p: m(1 - p)
    for name in ("Dropout", "SpatialDropout2D (channels_last)", "GaussianDropout"):
        for dtype in ("float16", "bfloat16"):
            yield f"keras ({backend})", name, 0.8, dtype, 0, lambda m=makers[name], d=dtype: m(0.2, dtype=d)


def jax_rows():
    import jax
    import jax.numpy as jnp

    def dropout(key, x, keep_prob):
        return jnp.where(jax.random.bernoulli(key, keep_prob, x.shape), x / keep_prob, 0)

    for p in KEEP_PROBS:
        yield ("jax", "fn(key, x, keep_prob) via from_jax", p, "float32", 1,
               lambda p=p: sd.adapters.from_jax(jax.jit(dropout), lambda x: x, keep_prob=p, name="jax_dropout"))


def tf_rows():
    import tensorflow as tf

    for p in KEEP_PROBS:
        yield ("tensorflow", "stateless_dropout via from_tf", p, "float32", 1,
               lambda p=p: sd.adapters.from_tf(
                   lambda x, seed: tf.nn.experimental.stateless_dropout(x, rate=1 - p, seed=seed), lambda x: x,
                   keep_prob=p))


SOURCES = (("torch", "torch", torch_rows), ("flax", "flax", flax_rows), ("keras", "keras", keras_rows),
           ("jax", "jax", jax_rows), ("tensorflow", "tensorflow", tf_rows))


def run(rows, seed):
    out = []
    for framework, layer, p, dtype, glue, make in rows:
        obj = make()
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = sd.verify_dropout(obj, seed=seed)
        elapsed = time.perf_counter() - t0
        frame = result.to_frame()
        failed = sorted({c.split("[")[0] for c in frame[frame.status == "failed"].check})
        notes = sorted({str(w.message).split(":")[0][:40] for w in caught if w.category is UserWarning})
        out.append(dict(framework=framework, layer=layer, keep_prob=p, dtype=dtype,
                        verdict="pass" if result.passed else "FAIL", failing=", ".join(failed) or "—",
                        seconds=elapsed, glue=glue, warnings="; ".join(notes) or ""))
        print(f"{framework:14s} {layer:42s} {p:.1f} {dtype:8s} {out[-1]['verdict']:4s} {elapsed:5.1f}s "
              f"{out[-1]['failing']}", flush=True)
    return out


def markdown(rows, seed, skipped):
    lines = [f"Seed {seed}, default rates (false-fail 1e-6, false-pass 1e-3); generated by "
             "`python benchmarks/framework_matrix.py`.", "",
             "| framework | layer | keep_prob | dtype | verdict | failing checks | time (s) | glue | warnings |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['framework']} | {r['layer']} | {r['keep_prob']:g} | {r['dtype']} | {r['verdict']} | "
                     f"{r['failing']} | {r['seconds']:.1f} | {r['glue']} | {r['warnings']} |")
    for name in skipped:
        lines.append(f"| {name} | (not installed) | | | skipped | | | | |")
    passed = sum(r["verdict"] == "pass" for r in rows)
    lines += ["", f"{passed} of {len(rows)} rows pass; glue lines: {sum(r['glue'] for r in rows)} in all, "
                  f"{sum(r['glue'] == 0 for r in rows)} rows need none."]
    return "\n".join(lines)


def write(table, path):
    path = pathlib.Path(path)
    text = path.read_text() if path.exists() else f"# Frameworks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else ""
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="keep_prob 0.8 and float32 only")
    parser.add_argument("--only", nargs="*", help="frameworks to run (torch flax keras jax tensorflow)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "FRAMEWORKS.md"), help="'-' to print only")
    args = parser.parse_args(argv)
    rows, skipped = [], []
    for name, module, source in SOURCES:
        if args.only and name not in args.only:
            continue
        if not have(module):
            skipped.append(name)
            continue
        for row in source():
            if args.quick and (row[2] != 0.8 or row[3] != "float32"):
                continue
            rows.append(row)
    table = markdown(run(rows, args.seed), args.seed, skipped)
    print(table)
    if args.out != "-":
        write(table, args.out)


if __name__ == "__main__":
    main()
