import sys

from boiler_ai.cli import main

sys.exit(main())
