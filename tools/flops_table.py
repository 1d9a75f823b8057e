"""Write the README's model table (parameters, FLOPs per example) from the code that counts
them, so the README says what every trial logs in `info.model`:

    python3 tools/flops_table.py            # rewrites the table in README.md
    python3 tools/flops_table.py --check    # exit 1 if README's table is not the code's
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- models:begin -->", "<!-- models:end -->"
TASK = "12"  # the default task: its class count sets the classifier's size
DESCRIPTIONS = {
    "cnn_small": "strided CNN, no normalization layer",
    "ds_cnn_s": 'Zhang et al. 2017, "Hello Edge"',
}


def table() -> str:
    """The table, as the trials count: `torch.utils.flop_counter` on one example of the
    default features (width 1)."""
    sys.path.insert(0, str(ROOT))
    from sweeper.kws.data import classes_for
    from sweeper.kws.features import FeatureConfig
    from sweeper.kws.models import MODELS, build_model, flops_per_example, parameter_count

    features = FeatureConfig()
    shape = (1, features.n_features, features.n_frames)
    lines = [f"| model | parameters | FLOPs / example ({features.n_features} x "
             f"{features.n_frames} {features.kind.upper()}) |", "|---|---:|---:|"]
    for name in MODELS:
        model = build_model(name, len(classes_for(TASK)))
        about = f" ({DESCRIPTIONS[name]})" if name in DESCRIPTIONS else ""
        lines.append(f"| `{name}`{about} | {parameter_count(model):,} | "
                     f"{flops_per_example(model, shape) / 1e6:.1f} M |")
    return "\n".join(lines)


def section(text: str) -> str | None:
    found = re.search(f"{re.escape(BEGIN)}\n(.*?)\n?{re.escape(END)}", text, flags=re.S)
    return found.group(1) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if README's model table is not the code's")
    args = parser.parse_args(argv)
    text = README.read_text()
    if section(text) is None:
        print(f"{README}: no {BEGIN} ... {END} section")
        return 1
    body = table()
    if args.check:
        if section(text) != body:
            print(f"{README}: the model table is not the code's; run tools/flops_table.py")
            return 1
        return 0
    README.write_text(re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}",
                             lambda _m: f"{BEGIN}\n{body}\n{END}", text, flags=re.S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
