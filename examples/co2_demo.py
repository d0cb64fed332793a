"""
The Mauna Loa CO2 demo
======================

The Mauna Loa CO2 demo from Python (the same job as ``torchgp demo``): a sum of kernels fitted to the
monthly record, its forecast and the fitted components plotted. Run::

    python examples/co2_demo.py [--small] [--out DIR]
"""

import argparse
import tempfile

from torchgp.demo import run_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="every second month, fewer iterations (for CI)")
    parser.add_argument("--out", default=None, help="output folder (default: a temp folder)")
    args = parser.parse_args(argv)
    result = run_demo(args.out or tempfile.mkdtemp(), quick=args.small)
    print({k: result[k] for k in ("rmse", "nlpd", "coverage95", "train_mll", "seconds")})


if __name__ == "__main__":
    main()
