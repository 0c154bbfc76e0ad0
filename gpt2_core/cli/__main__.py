import sys

from gpt2_core.cli import main

sys.exit(main())
