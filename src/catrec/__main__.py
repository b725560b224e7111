"""``python -m catrec``: the ``catrec`` console script without installing the package.

The workflow's rules call the CLI this way, with the checkout's ``src`` on ``PYTHONPATH``, so that a conda
environment built from ``envs/catrec.yaml`` (published packages only) runs this checkout's code.
"""

import sys

from catrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
