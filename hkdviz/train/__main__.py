"""`python -m hkdviz.train ...` = `hkdviz train ...` (also the torchrun entry point: `torchrun -m hkdviz.train`)."""
import sys

from .cli import main

sys.exit(main())
