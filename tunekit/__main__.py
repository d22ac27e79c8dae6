"""``python -m tunekit ...`` is the ``tunekit`` command (and ``torchrun ... -m tunekit train ...``)."""
import sys

from tunekit.cli import main

sys.exit(main())
